"""One service of a Compose file (05-services.md), validated and normalized: every supported key
in one form, every other key refused in one line that names it."""
from __future__ import annotations

import os
import shlex

from steps import BadInput
from steps.compose import values as v
from steps.compose.options import caps, depends_on, healthcheck, labels, limits, networks, restart
from steps.compose.variables import NAME, Lookup, read_dotenv

KEYS = ("image", "command", "entrypoint", "environment", "env_file", "ports", "volumes", "tmpfs", "networks",
        "depends_on", "restart", "healthcheck", "user", "working_dir", "hostname", "init", "read_only", "cap_add",
        "cap_drop", "mem_limit", "cpus", "pids_limit", "deploy", "labels", "stop_signal", "stop_grace_period")
HINTS = {"build": "diy-docker runs images; build them first",
         "container_name": "diy-docker names the container PROJECT-SERVICE-1",
         "expose": "publish with ports:, or reach the service by name on its network",
         "profiles": "every service of the file is part of the project",
         "extends": "write the service out in full, or use a YAML anchor"}


def normalize_service(name: str, raw, directory: str, lookup: Lookup) -> dict:
    """The service's keys, each in one form; the empty ones as None, [] or {}."""
    path = f"services.{name}"
    if raw is None or not isinstance(raw, dict):
        raise v.fail(f"bad {path}: expected a mapping with at least image:, e.g. {{image: nginx}}")
    v.check_keys(raw, KEYS, path, HINTS, extensions=True)
    if raw.get("image") in (None, ""):
        raise v.fail(f"bad {path}: image is missing; diy-docker runs images (build them first), e.g. image: nginx")
    g = _Getter(raw, path)
    environment = {**env_files(raw.get("env_file"), directory, lookup, f"{path}.env_file"),
                   **environment_of(raw.get("environment"), lookup, f"{path}.environment")}
    return {"image": g.str("image"), "command": argv(raw.get("command"), f"{path}.command"),
            "entrypoint": argv(raw.get("entrypoint"), f"{path}.entrypoint"), "environment": environment,
            "env_file": env_file_list(raw.get("env_file"), directory, f"{path}.env_file"),
            "ports": ports(raw.get("ports"), f"{path}.ports"),
            "volumes": volumes(raw.get("volumes"), directory, f"{path}.volumes"),
            "tmpfs": tmpfs(raw.get("tmpfs"), f"{path}.tmpfs"), "networks": networks(raw.get("networks"), path),
            "depends_on": depends_on(raw.get("depends_on"), f"{path}.depends_on"),
            "restart": restart(raw.get("restart"), f"{path}.restart"),
            "healthcheck": healthcheck(raw.get("healthcheck"), f"{path}.healthcheck"),
            "user": g.str("user"), "working_dir": g.workdir(), "hostname": g.str("hostname"),
            "init": g.bool("init"), "read_only": g.bool("read_only"),
            "cap_add": caps(raw.get("cap_add"), f"{path}.cap_add"), "cap_drop": caps(raw.get("cap_drop"),
                                                                                       f"{path}.cap_drop"),
            **limits(raw, path), "labels": labels(raw.get("labels"), f"{path}.labels"),
            "stop_signal": g.str("stop_signal"),
            "stop_grace_period": g.duration("stop_grace_period")}


class _Getter:
    """The plain scalar keys of one service: None when absent, else checked by type."""

    def __init__(self, raw: dict, path: str):
        self.raw, self.path = raw, path

    def str(self, key: str) -> str | None:
        value = self.raw.get(key)
        return None if value is None else v.want_str(value, f"{self.path}.{key}")

    def bool(self, key: str) -> bool:
        return v.want_bool(self.raw.get(key, False), f"{self.path}.{key}")

    def duration(self, key: str) -> float | None:
        value = self.raw.get(key)
        return None if value is None else v.duration(value, f"{self.path}.{key}")

    def workdir(self) -> str | None:
        value = self.str("working_dir")
        if value is not None and not value.startswith("/"):
            raise v.fail(f"bad {self.path}.working_dir: {value!r} must be an absolute path, e.g. /srv")
        return value


def argv(value, path: str) -> list[str] | None:
    """command / entrypoint: a string split as a shell would (no expansion), or a list of strings."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(v.want_str(value, path))
        except ValueError as e:
            raise v.fail(f"bad {path}: {value!r} cannot be split into words ({e}); or give a list") from None
    if not isinstance(value, list):
        raise v.fail(f"bad {path}: expected a string or a list of strings, e.g. [\"nginx\", \"-g\", \"daemon off;\"]")
    return [v.want_str(word, f"{path}[{i}]") for i, word in enumerate(value)]


def environment_of(value, lookup: Lookup, path: str) -> dict[str, str]:
    """A mapping (or its list form "K=V", "K"); a bare K takes the environment's value or is dropped."""
    out = {}
    for key, raw in v.pairs(value, path).items():
        if not NAME.fullmatch(key):
            raise v.fail(f"bad {path}.{key}: a variable name is letters, digits and '_', e.g. DB_HOST")
        text = v.text_value(raw, f"{path}.{key}")
        if text is None:
            text = lookup(key)
        if text is not None:
            out[key] = text
    return out


def env_file_list(value, directory: str, path: str) -> list[dict]:
    """env_file: a path, or a list of paths or of {path, required}; paths against the project dir."""
    if value is None:
        return []
    items = [value] if isinstance(value, (str, dict)) else value
    if not isinstance(items, list):
        raise v.fail(f"bad {path}: expected a path or a list of paths, e.g. ./app.env")
    out = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if isinstance(item, dict):
            v.check_keys(item, ("path", "required"), where)
            file, required = item.get("path"), v.want_bool(item.get("required", True), f"{where}.required")
        else:
            file, required = item, True
        file = v.want_str(file, f"{where}.path" if isinstance(item, dict) else where, "./app.env")
        out.append({"path": os.path.normpath(os.path.join(directory, os.path.expanduser(file))),
                    "required": required})
    return out


def env_files(value, directory: str, lookup: Lookup, path: str) -> dict[str, str]:
    """The values of every env_file, in order (a later file wins)."""
    out: dict[str, str] = {}
    for entry in env_file_list(value, directory, path):
        out.update(read_dotenv(entry["path"], lookup, entry["required"]))
    return out


def ports(value, path: str) -> list[dict]:
    items = _list(value, path, '["8080:80"]')
    out = [v.port(p, f"{path}[{i}]") for i, p in enumerate(items)]
    seen = set()
    for i, p in enumerate(out):
        key = (p["host_ip"], p["published"], p["protocol"])
        if p["published"] is not None and key in seen:
            raise v.fail(f"bad {path}[{i}]: published port {p['published']}/{p['protocol']} is given twice")
        seen.add(key)
    return out


def _list(value, path: str, example: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise v.fail(f"bad {path}: expected a list, e.g. {example}")
    return value


def volumes(value, directory: str, path: str) -> list[dict]:
    """Long forms; bind sources made absolute against the project directory."""
    out = []
    for i, item in enumerate(_list(value, path, '["data:/data", "./conf:/etc/app:ro"]')):
        vol = v.volume(item, f"{path}[{i}]")
        if vol["type"] == "bind":
            source = os.path.normpath(os.path.join(directory, os.path.expanduser(vol["source"])))
            if ":" in source or "," in source:
                raise v.fail(f"bad {path}[{i}]: bind source {source!r} must not contain ':' or ','")
            vol = {**vol, "source": source}
        if any(o["target"] == vol["target"] for o in out):
            raise v.fail(f"bad {path}[{i}]: target {vol['target']} is given twice; each target once")
        out.append(vol)
    return out


def tmpfs(value, path: str) -> list[str]:
    """tmpfs: "/path[:OPTS]" or a list of them, checked as --tmpfs takes them."""
    from steps.storage.mount_specs import parse_tmpfs

    out = [] if value is None else v.want_strings(value, path)
    for i, item in enumerate(out):
        try:
            parse_tmpfs(item)
        except BadInput as e:
            raise v.fail(f"bad {path}[{i}]: {e}") from None
    return out


