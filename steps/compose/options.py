"""The run-time keys of a service (05-services.md): networks, depends_on, restart, healthcheck,
capabilities, labels and resource limits, validated and normalized."""
from __future__ import annotations

import re

from steps.compose import values as v

CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
_RESTART = re.compile(r"no|always|unless-stopped|on-failure(:[0-9]{1,9})?")
_ALIAS = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,62})")
_CAP = re.compile(r"[A-Za-z_]{2,40}")


def networks(value, path: str) -> dict[str, dict]:
    """{network: {"aliases": [...]}}; no networks: the implicit `default` one."""
    if value is None or value == {}:
        return {"default": {"aliases": []}}
    mapping = _pairs_of_networks(value, f"{path}.networks")
    out = {}
    for net, conf in mapping.items():
        where = f"{path}.networks.{net}"
        conf = v.want_map(conf, where)
        v.check_keys(conf, ("aliases",), where)
        aliases = v.want_strings(conf.get("aliases") or [], f"{where}.aliases")
        for alias in aliases:
            if not _ALIAS.fullmatch(alias):
                raise v.fail(f"bad {where}.aliases: {alias!r} is not a host name, e.g. db or db.local")
        out[net] = {"aliases": aliases}
    return out


def _pairs_of_networks(value, path: str) -> dict:
    if isinstance(value, list):
        return {v.want_str(n, f"{path}[{i}]"): None for i, n in enumerate(value)}
    mapping = v.want_map(value, path)
    for key in mapping:
        v.want_str(key, f"{path} key")
    return mapping


def depends_on(value, path: str) -> dict[str, dict]:
    """{service: {"condition", "required", "restart"}} with the spec's defaults."""
    if value is None:
        return {}
    mapping = ({v.want_str(n, f"{path}[{i}]"): None for i, n in enumerate(value)}
               if isinstance(value, list) else v.want_map(value, path))
    out = {}
    for name, conf in mapping.items():
        where = f"{path}.{name}"
        conf = v.want_map(conf, where)
        v.check_keys(conf, ("condition", "required", "restart"), where)
        condition = v.want_str(conf.get("condition", "service_started"), f"{where}.condition")
        if condition not in CONDITIONS:
            raise v.fail(f"bad {where}.condition: {condition!r}; use {', '.join(CONDITIONS)}")
        out[name] = {"condition": condition, "required": v.want_bool(conf.get("required", True), f"{where}.required"),
                     "restart": v.want_bool(conf.get("restart", False), f"{where}.restart")}
    return out


def restart(value, path: str) -> str | None:
    if value is None:
        return None
    text = v.want_str(value, path, '"unless-stopped"')
    if not _RESTART.fullmatch(text):
        raise v.fail(f"bad {path}: {text!r}; use no, always, on-failure[:N] or unless-stopped")
    return text


def healthcheck(value, path: str) -> dict | None:
    """{"test", "interval", "timeout", "start_period", "retries"}; None in a field: the image's or
    Docker's default. disable: true is test ["NONE"]."""
    if value is None:
        return None
    conf = v.want_map(value, path)
    v.check_keys(conf, ("test", "interval", "timeout", "start_period", "retries", "disable"), path)
    if v.want_bool(conf.get("disable", False), f"{path}.disable"):
        if set(conf) - {"disable"}:
            raise v.fail(f"bad {path}: disable: true cannot be combined with other healthcheck keys")
        return {"test": ["NONE"], "interval": None, "timeout": None, "start_period": None, "retries": None}
    timing = {k: None if conf.get(k) is None else v.duration(conf[k], f"{path}.{k}")
              for k in ("interval", "timeout", "start_period")}
    retries = conf.get("retries")
    return {"test": health_test(conf.get("test"), f"{path}.test"), **timing,
            "retries": None if retries is None else v.want_int(retries, f"{path}.retries")}


def health_test(value, path: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return ["CMD-SHELL", value]
    words = v.want_strings(value, path) if isinstance(value, list) else v.want_str(value, path)
    ok = (words[:1] == ["NONE"] and len(words) == 1) or (words[:1] == ["CMD"] and len(words) >= 2) \
        or (words[:1] == ["CMD-SHELL"] and len(words) == 2)
    if not ok:
        raise v.fail(f"bad {path}: expected a string, [\"CMD\", ARG...], [\"CMD-SHELL\", \"COMMAND\"] or [\"NONE\"]")
    return words


def caps(value, path: str) -> list[str]:
    out = [] if value is None else v.want_strings(value, path)
    for item in out:
        if not _CAP.fullmatch(item):
            raise v.fail(f"bad {path}: {item!r} is not a capability name, e.g. NET_ADMIN or ALL")
    return out


def labels(value, path: str) -> dict[str, str]:
    out = {}
    for key, raw in v.pairs(value, path).items():
        if not key or any(c.isspace() for c in key):
            raise v.fail(f"bad {path}: label {key!r} needs a key without spaces, e.g. com.example.team=web")
        out[key] = v.text_value(raw, f"{path}.{key}") or ""
    return out


def limits(raw: dict, path: str) -> dict:
    """mem_limit, cpus, pids_limit and deploy.resources.limits.{memory,cpus,pids}: one value each."""
    deploy = v.want_map(raw.get("deploy"), f"{path}.deploy")
    v.check_keys(deploy, ("resources",), f"{path}.deploy", {"replicas": "one container per service here"})
    resources = v.want_map(deploy.get("resources"), f"{path}.deploy.resources")
    v.check_keys(resources, ("limits",), f"{path}.deploy.resources")
    limit = v.want_map(resources.get("limits"), f"{path}.deploy.resources.limits")
    v.check_keys(limit, ("cpus", "memory", "pids"), f"{path}.deploy.resources.limits")
    out = {}
    for key, deploy_key, parse in (("mem_limit", "memory", _memory), ("cpus", "cpus", _cpus),
                                   ("pids_limit", "pids", _pids)):
        mine = None if raw.get(key) is None else parse(raw[key], f"{path}.{key}")
        other_path = f"{path}.deploy.resources.limits.{deploy_key}"
        other = None if limit.get(deploy_key) is None else parse(limit[deploy_key], other_path)
        if None not in (mine, other) and mine != other:
            raise v.fail(f"bad {path}: {key} and deploy.resources.limits.{deploy_key} differ; give one of them")
        out[key] = mine if mine is not None else other
    return out


def _memory(value, path: str) -> int:
    n = v.size(value, path)
    if n < 6 << 20:
        raise v.fail(f"bad {path}: {value!r} is below the minimum of 6m")
    return n


def _cpus(value, path: str) -> float:
    try:
        n = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        n = -1.0
    if not 0 < n < 1e6:
        raise v.fail(f"bad {path}: {value!r} is not a number of CPUs above 0, e.g. 0.5 or 2")
    return n


def _pids(value, path: str) -> int | None:
    if value in (0, -1) and not isinstance(value, bool):
        return None  # unlimited, as Docker reads 0 and -1
    return v.want_int(value, path, 1)
