"""From a normalized project (steps.compose.model) to what the rest of diy-docker takes: the
keyword arguments of steps.spec.RunOptions for one service's container, the hash that says when
that container must be re-created, and the resolved file for `compose config`."""
from __future__ import annotations

import json

from steps import BadInput

# Keys of run_options() that are not (yet) fields of steps.spec.RunOptions.
EXTRA_KEYS = ("entrypoint_args", "healthcheck", "networks", "stop_grace_period")
# Lists whose order does not change the container: sorted before hashing.
_UNORDERED = ("env", "label", "publish", "volume", "mount", "tmpfs", "cap_add", "cap_drop")


def container_name(project: dict, service: str) -> str:
    return f"{project['name']}-{service}-1"


def _service(project: dict, service: str) -> dict:
    try:
        return project["services"][service]
    except KeyError:
        raise BadInput(f"no such service: {service} (the project has {', '.join(project['services'])})") from None


def run_options(project: dict, service: str) -> dict:
    """RunOptions' keyword arguments for the service's container, plus EXTRA_KEYS: the entrypoint's
    first word goes to "entrypoint" and the rest to "entrypoint_args"; "healthcheck" (None: the
    image's), "networks" ({full network name: [service, aliases...]}), "stop_grace_period" (seconds
    or None)."""
    s = _service(project, service)
    volume, mount = mounts(project, s)
    entrypoint = s["entrypoint"]
    return {"name": container_name(project, service), "image": s["image"], "command": list(s["command"] or []),
            "env": [f"{k}={val}" for k, val in s["environment"].items()], "workdir": s["working_dir"],
            "hostname": s["hostname"], "volume": volume, "mount": mount, "tmpfs": list(s["tmpfs"]),
            "read_only": s["read_only"], "memory": None if s["mem_limit"] is None else str(s["mem_limit"]),
            "cpus": None if s["cpus"] is None else str(s["cpus"]), "pids_limit": s["pids_limit"],
            "publish": [publish(p) for p in s["ports"]], "user": s["user"],
            "entrypoint": None if entrypoint is None else (entrypoint[0] if entrypoint else ""),
            "entrypoint_args": list(entrypoint[1:]) if entrypoint else [],
            "cap_add": list(s["cap_add"]), "cap_drop": list(s["cap_drop"]), "init": s["init"],
            "stop_signal": s["stop_signal"], "label": labels(project, service), "restart": s["restart"],
            "healthcheck": s["healthcheck"], "networks": networks(project, service),
            "stop_grace_period": s["stop_grace_period"]}


def split(options: dict) -> tuple[dict, dict]:
    """(RunOptions' keyword arguments, the EXTRA_KEYS) of a run_options() dict."""
    return ({k: val for k, val in options.items() if k not in EXTRA_KEYS},
            {k: options[k] for k in EXTRA_KEYS})


def publish(port: dict) -> str:
    """A long-form port as -p takes it: [[HOST_IP:][PUBLISHED]:]TARGET/PROTOCOL."""
    tail = f"{port['target']}/{port['protocol']}"
    published = "" if port["published"] is None else str(port["published"])
    if port["host_ip"]:
        return f"{port['host_ip']}:{published}:{tail}"
    return f"{published}:{tail}" if published else tail


def mounts(project: dict, s: dict) -> tuple[list[str], list[str]]:
    """(-v strings, --mount strings): named volumes by their full name, binds by absolute path,
    anonymous ones by target; a long-form tmpfs as a --mount."""
    volume, mount = [], []
    for vol in s["volumes"]:
        ro = ":ro" if vol["read_only"] else ""
        if vol["type"] == "tmpfs":
            size = (vol.get("tmpfs") or {}).get("size")
            mount.append(f"type=tmpfs,target={vol['target']}" + (f",tmpfs-size={size}" if size else "")
                         + (",readonly" if vol["read_only"] else ""))
        elif vol["type"] == "bind":
            volume.append(f"{vol['source']}:{vol['target']}{ro}")
        elif vol["source"] is None:
            volume.append(f"{vol['target']}{ro}")
        else:
            volume.append(f"{project['volumes'][vol['source']]['name']}:{vol['target']}{ro}")
    return volume, mount


def labels(project: dict, service: str) -> list[str]:
    """The service's labels, then Compose's own (which win)."""
    own = {"com.docker.compose.project": project["name"], "com.docker.compose.service": service,
           "com.docker.compose.container-number": "1", "com.docker.compose.oneoff": "False"}
    return [f"{k}={val}" for k, val in {**_service(project, service)["labels"], **own}.items()]


def networks(project: dict, service: str) -> dict[str, list[str]]:
    """{full network name: [the service's name, then its aliases there]}."""
    out = {}
    for net, conf in _service(project, service)["networks"].items():
        names = [service] + [a for a in conf["aliases"] if a != service]
        out[project["networks"][net]["name"]] = list(dict.fromkeys(names))
    return out


def config_hash(project: dict, service: str) -> str:
    """sha256 of everything that defines the service's container (its run options, and the networks
    and volumes it uses); unordered lists sorted, so only a real change changes it."""
    from hashlib import sha256

    options = run_options(project, service)
    canon = {k: sorted(val) if k in _UNORDERED else val for k, val in options.items()}
    s = _service(project, service)
    canon["uses_networks"] = {project["networks"][n]["name"]: project["networks"][n] for n in s["networks"]}
    canon["uses_volumes"] = {v["source"]: project["volumes"][v["source"]] for v in s["volumes"]
                             if v["type"] == "volume" and v["source"] is not None}
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256(text.encode()).hexdigest()


def dump(project: dict) -> str:
    """The resolved project as a Compose file (for `compose config`): readable back by load(),
    with every `$` of a value written `$$`."""
    import yaml

    from steps.compose.render import as_file

    return yaml.safe_dump(as_file(project), sort_keys=False, default_flow_style=False, allow_unicode=True)
