"""A normalized project written back in the Compose file's own form (`compose config`): empty
values left out, durations as "1m30s", `$` escaped as `$$` so the output reads back the same."""
from __future__ import annotations

_DURATION_UNITS = (("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000), ("ms", 1000), ("us", 1))
_DURATIONS = ("stop_grace_period", "interval", "timeout", "start_period")


def as_file(project: dict) -> dict:
    out: dict = {"name": project["name"], "services": {}}
    for name, s in project["services"].items():
        out["services"][name] = _escape(service(s))
    if project["networks"]:
        out["networks"] = {k: _escape(network(n)) for k, n in project["networks"].items()}
    if project["volumes"]:
        out["volumes"] = {k: _escape(volume(v)) for k, v in project["volumes"].items()}
    return out


def service(s: dict) -> dict:
    out = {}
    for key, value in s.items():
        if key == "env_file":  # its values are in environment already
            continue
        if key in _DURATIONS and value is not None:
            value = duration_text(value)
        elif key == "healthcheck" and value:
            value = {k: duration_text(x) if k in _DURATIONS else x for k, x in value.items() if x is not None}
        elif key == "ports":
            value = [{k: x for k, x in p.items() if x not in (None, "")} for p in value]
        elif key == "volumes":
            value = [{k: x for k, x in vol.items() if x is not None} for vol in value]
        elif key == "networks":
            value = {net: conf if conf["aliases"] else None for net, conf in value.items()}
        if value not in (None, [], {}, False):
            out[key] = value
    return out


def network(n: dict) -> dict:
    if n["external"]:
        return {"name": n["name"], "external": True}
    out = {"name": n["name"], "driver": n["driver"]}
    if n["subnet"]:
        out["ipam"] = {"config": [{"subnet": n["subnet"]}]}
    return {**out, "labels": n["labels"]} if n["labels"] else out


def volume(v: dict) -> dict:
    if v["external"]:
        return {"name": v["name"], "external": True}
    out = {"name": v["name"], "driver": v["driver"]}
    return {**out, "labels": v["labels"]} if v["labels"] else out


def duration_text(seconds: float) -> str:
    """Seconds as Go writes a duration: 90 -> "1m30s", 0.5 -> "500ms", 0 -> "0s"."""
    left = round(seconds * 1_000_000)
    parts = []
    for unit, size in _DURATION_UNITS:
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _escape(tree):
    if isinstance(tree, dict):
        return {k: _escape(x) for k, x in tree.items()}
    if isinstance(tree, list):
        return [_escape(x) for x in tree]
    return tree.replace("$", "$$") if isinstance(tree, str) else tree
