"""Read-only views: ps and images in Docker's columns (inspect: steps/inspect.py; logs: steps/logview.py)."""
from __future__ import annotations

import json
import time

from steps import BadInput, config
from steps.names import Names
from steps.views import containers, state_of

PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
              "RunningFor": "CREATED", "Status": "STATUS", "Ports": "PORTS", "Names": "NAMES",
              "Labels": "LABELS", "State": "STATE", "Mounts": "MOUNTS", "Networks": "NETWORKS",
              "Size": "SIZE", "LocalVolumes": "LOCAL VOLUMES", "Label": "LABEL"}
PS_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
IMAGES_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "CreatedSince": "CREATED",
                  "CreatedAt": "CREATED AT", "Size": "SIZE", "Digest": "DIGEST", "Containers": "CONTAINERS"}
IMAGES_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"


def docker_status(state: dict, record: dict, now: float, health: str | None = None) -> tuple[str, str]:
    """(State, Status) as docker ps shows them: running "Up 3 seconds", "Up 1 minute (healthy)",
    "Up 2 seconds (health: starting)", "Exited (0) 2 minutes ago"."""
    from steps.cli.columns import human_duration, parse_time

    last = record.get("last") or {}
    if str(state["state"]).startswith("running"):
        started = parse_time(last.get("started_at"))
        up = "Up " + human_duration(now - started) if started else "Up"
        if health:
            up += f" (health: {health})" if health == "starting" else f" ({health})"
        return "running", up + (" (monitor lost)" if state["state"] != "running" else "")
    if state["state"] == "created":
        return "created", "Created"
    code = last.get("exit_code")
    finished = parse_time(last.get("finished_at"))
    when = f" {human_duration(now - finished)} ago" if finished else ""
    word = "restarting" if last.get("restarting") else "exited"
    return word, f"{word.capitalize()} ({255 if code is None else code}){when}"


def ports_text(record: dict, running: bool) -> str:
    if not running:
        return ""
    return ", ".join(f"{p['host_ip']}:{p['host_port']}->{p['container_port']}/{p.get('proto', 'tcp')}"
                     for p in record.get("publish") or [])


def ps_row(names: Names, record: dict, configs: dict, no_trunc: bool, now: float) -> dict:
    """One container as docker ps's template sees it (.ID .Image .Command .Status ...)."""
    from steps.cli.columns import created_at, since
    from steps.runtime.command import command_argv
    from steps.views import container_id, image_config

    key = record.get("image_id") or record.get("image")
    if key not in configs:
        configs[key] = image_config(record)
    from steps.runtime.health import status as health_status

    state = state_of(names, record)
    health = health_status(names, state)
    word, status = docker_status(state, record, now, health)
    argv = command_argv(record, configs[key])
    command = " ".join(argv)
    if not no_trunc and len(command) > 20:
        command = command[:19] + "\u2026"
    cid = container_id(record)
    labels = record.get("labels") or {}
    vols = record.get("volumes") or []
    return {"ID": cid if no_trunc else cid[:12], "Image": record.get("image", ""),
            "Command": json.dumps(command, ensure_ascii=False), "CreatedAt": created_at(record.get("created")),
            "RunningFor": since(record.get("created"), now), "Status": status,
            "Ports": ports_text(record, word == "running"), "Names": names.container,
            "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())), "State": word,
            "Mounts": ",".join(v.get("name") or v.get("source") or v["target"] for v in vols),
            "Networks": ",".join(record.get("networks") or [record.get("network") or "bridge"]), "Size": "",
            "LocalVolumes": str(sum(1 for v in vols if v.get("type") == "volume")),
            "Label": lambda k, _labels=labels: _labels.get(k, ""),
            "_json": {"name": names.container, "image": record.get("image"), **state, "health": health,
                      "created": record.get("created"), "command": argv, "id": cid}}


FILTERS = ("id", "name", "label", "status", "ancestor", "exited")
STATUSES = ("created", "restarting", "running", "exited")


def parse_filters(items: list[str] | None) -> dict[str, list[str]]:
    """--filter KEY=VALUE (repeatable): values of one key are alternatives, keys must all match."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        key, eq, value = (item or "").partition("=")
        if key not in FILTERS or not eq or not value:
            raise BadInput(f"bad filter {item!r}: use KEY=VALUE with KEY one of {', '.join(FILTERS)}, "
                           "e.g. status=exited or label=tier=web")
        if key == "status" and value not in STATUSES:
            raise BadInput(f"bad filter {item!r}: status is one of {', '.join(STATUSES)}")
        out.setdefault(key, []).append(value)
    return out


def matches(row: dict, record: dict, filters: dict[str, list[str]]) -> bool:
    labels = record.get("labels") or {}
    code = str((record.get("last") or {}).get("exit_code"))
    tests = {"id": lambda v: row["_json"]["id"].startswith(v), "name": lambda v: v in row["Names"],
             "status": lambda v: row["State"] == v, "exited": lambda v: row["State"] == "exited" and code == v,
             "ancestor": lambda v: record.get("image") in (v, f"{v}:latest") or (record.get("image_id") or "")
             .removeprefix("sha256:").startswith(v.removeprefix("sha256:")),
             "label": lambda v: labels.get(v.partition("=")[0]) == v.partition("=")[2] if "=" in v else v in labels}
    return all(any(tests[key](v) for v in values) for key, values in filters.items())


def ps(all: bool = False, quiet: bool = False, no_trunc: bool = False, fmt: str | None = None,
       as_json: bool = False, filters: list[str] | None = None) -> int:
    """Running containers (all with --all or a status filter), newest first, in Docker's columns;
    --json: today's rows."""
    check_format(fmt)
    wanted = parse_filters(filters)
    all = all or "status" in wanted or "exited" in wanted
    now, configs, rows = time.time(), {}, []
    for names, record in sorted(containers(), key=lambda nr: (nr[1].get("created") or "", nr[0].container),
                                reverse=True):
        row = ps_row(names, record, configs, no_trunc, now)
        if (all or row["State"] in ("running", "restarting")) and matches(row, record, wanted):
            rows.append(row)
    if as_json:
        print(json.dumps([{**r["_json"], "status": r["Status"], "ports": r["Ports"]} for r in rows], indent=2))
        return 0
    show(rows, quiet, default_table(fmt, PS_TABLE), PS_HEADERS)
    return 0


def check_format(fmt: str | None) -> None:
    """A bad --format is refused before anything is read."""
    if fmt and fmt.strip() not in ("json", "table"):
        from steps.cli.gotemplate import parse

        parse(fmt.removeprefix("table").replace("\\t", "\t"))


def default_table(fmt: str | None, table: str) -> str:
    """No --format, or a bare `table`, is the default table (as docker's)."""
    return table if not fmt or fmt.strip() == "table" else fmt


def show(rows: list[dict], quiet: bool, fmt: str, headers: dict[str, str]) -> None:
    from steps.cli.columns import render

    lines = [r["ID"] for r in rows] if quiet else render(
        [{k: v for k, v in r.items() if k != "_json"} for r in rows], fmt, headers)
    for line in lines:
        print(line)


def image_rows(now: float) -> list[dict]:
    from steps.cli.columns import created_at, human_size, since
    from steps.image.store import Store

    instance = config.load()
    store = Store(instance)
    sizes = LayerSizes(instance, store)
    users: dict[str, list[str]] = {}
    for names, record in containers():
        users.setdefault(record.get("image_id") or "", []).append(names.container)
        users.setdefault(record["image"], []).append(names.container)
    rows = []
    for ref, image_id in sorted(store.index().items()):
        name, _, tag = ref.partition("@") if "@" in ref else ref.rpartition(":")
        image = store.image(image_id) or {}
        size = sum(sizes.of(d) for d in image.get("layers", []))
        used = sorted(set(users.get(image_id, []) + users.get(ref, [])))
        rows.append({"Repository": name, "Tag": "<none>" if "@" in ref else tag, "ID": image_id[7:19],
                     "CreatedSince": since(image.get("created"), now), "CreatedAt": created_at(image.get("created")),
                     "Size": human_size(size), "Digest": tag if "@" in ref else "<none>",
                     "Containers": str(len(used)),
                     "_json": {"name": name, "tag": tag, "id": image_id, "size": size,
                               "created": image.get("created"), "containers": used}})
    sizes.save()
    return rows


def images(as_json: bool = False, quiet: bool = False, fmt: str | None = None) -> int:
    """Images in Docker's columns: REPOSITORY TAG IMAGE ID CREATED SIZE; --json keeps CONTAINERS."""
    check_format(fmt)
    rows = image_rows(time.time())
    if as_json:
        print(json.dumps([r["_json"] for r in rows], indent=2))
        return 0
    show(rows, quiet, default_table(fmt, IMAGES_TABLE), IMAGES_HEADERS)
    return 0


class LayerSizes:
    """Layer sizes measured once and kept (STATE_ROOT/cache/layer-sizes.json): walking every file
    of every layer on each `images` is what made it slow on real images."""

    def __init__(self, instance, store):
        from steps.names import layer_sizes
        from steps.state import read_json

        self.path, self.store = layer_sizes(instance), store
        try:
            self.known: dict[str, int] = read_json(self.path) or {}
        except Exception:  # noqa: BLE001 - a damaged cache is measured again
            self.known = {}
        self.changed = False

    def of(self, diff_id: str) -> int:
        if diff_id not in self.known:
            from steps.facts import tree_size

            self.known[diff_id] = tree_size(self.store.layer_dir(diff_id))
            self.changed = True
        return self.known[diff_id]

    def save(self) -> None:
        from steps.state import write_json

        if self.changed:
            try:
                write_json(self.path, self.known)
            except OSError:
                pass  # a full or read-only disk: measured again next time
