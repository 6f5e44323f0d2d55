"""The container spec: every flag of `run`, validated before anything is touched."""
from __future__ import annotations

import os
import re
from typing import NamedTuple

from steps import BadInput
from steps.cgroup import parse_cpus, parse_memory, parse_pids
from steps.image.reference import canonical
from steps.runflags import parse_env_files
from steps.runtime.health import parse as parse_healthcheck
from steps.runtime.logfile import parse_log_opts
from steps.runtime.restart import parse as parse_restart
from steps.state import now_iso
from steps.volumes import check_volumes, normal_volumes, volumes_of

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
# The keys that make two runs "the same container"; the rest is bookkeeping.
SPEC_KEYS = ("name", "image", "command", "env", "workdir", "hostname", "volumes",
             "memory", "cpus", "pids_limit", "network", "publish", "user", "entrypoint",
             "privileged", "cap_add", "cap_drop", "security_opt", "tty", "interactive", "log_opts",
             "add_hosts", "dns", "init", "stop_signal", "labels", "ulimits", "shm_size", "publish_all", "expose",
             "read_only", "restart", "healthcheck", "networks", "aliases")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}$")
# [[HOSTIP:]HOSTPORT:]CONTAINERPORT[/PROTO]; an empty or missing HOSTPORT: one is chosen at create
_PUBLISH = re.compile(r"(?:(?:(?P<ip>[0-9.]+):)?(?P<host>[0-9]*):)?(?P<cont>[0-9]+)(?:/(?P<proto>[a-z]+))?")


def parse_env(items: list[str]) -> list[str]:
    out = []
    for item in items or []:
        key, eq, value = item.partition("=")
        if not _ENV_KEY.fullmatch(key) or "\0" in value:
            raise BadInput(f"bad env {item!r}: expected KEY=VALUE with KEY of letters, digits and '_'")
        if not eq:  # `--env KEY` takes the value from this environment, as Docker does
            if key not in os.environ:
                continue
            value = os.environ[key]
        out.append(f"{key}={value}")
    return out


def parse_workdir(path: str | None) -> str | None:
    """--workdir; None leaves it to the image's WorkingDir, else /."""
    if not path:
        return None
    if not os.path.isabs(path) or "\0" in path:
        raise BadInput(f"bad workdir {path!r}: must be an absolute path inside the container, e.g. /srv")
    return os.path.normpath(path)


def parse_hostname(name: str | None) -> str | None:
    if name in (None, ""):
        return None
    if len(name) > 64 or not _HOSTNAME.fullmatch(name):
        raise BadInput(f"bad hostname {name!r}: use letters, digits and '-' (labels joined by '.'), "
                       "at most 64 characters")
    return name


def parse_publish(items: list[str]) -> list[dict]:
    """`[[HOSTIP:]HOSTPORT:]CONTAINERPORT[/tcp|/udp]` -> dicts; each host port once. Without a host
    port the entry has host_port 0 and "auto": steps.ports.assign chooses one at create, as Docker."""
    import ipaddress

    out = []
    for item in items or []:
        m = _PUBLISH.fullmatch(item or "")
        hint = "expected [[HOSTIP:]HOSTPORT:]CONTAINERPORT[/tcp|/udp], e.g. 8080:80, 80 or 127.0.0.1:8080:80/udp"
        if not m:
            raise BadInput(f"bad publish {item!r}: {hint}")
        proto = m["proto"] or "tcp"
        if proto not in ("tcp", "udp"):
            raise BadInput(f"bad publish {item!r}: protocol {proto!r} must be tcp or udp")
        for label in ("host", "cont"):
            if m[label] and not 1 <= int(m[label]) <= 65535:
                raise BadInput(f"bad publish {item!r}: ports are 1-65535")
        try:
            host_ip = str(ipaddress.IPv4Address(m["ip"] or "0.0.0.0"))
        except ValueError:
            raise BadInput(f"bad publish {item!r}: {m['ip']!r} is not an IPv4 address") from None
        entry = {"host_ip": host_ip, "host_port": int(m["host"] or 0), "container_port": int(m["cont"]),
                 "proto": proto}
        out.append({**entry, "auto": True} if not m["host"] else entry)
    from steps.network import port_clash

    for i, p in enumerate(out):
        if clash := port_clash([p], [{**q, "name": "this one"} for q in out[:i]]):
            raise BadInput(f"bad publish: {clash.replace('container this one', 'this same run')}")
    return out


def parse_networks(given, aliases) -> tuple[str, list[str], dict[str, list[str]]]:
    """--network (repeatable: bridge, host, none or a user network's name) and --network-alias:
    (the primary mode or network, every network joined when that is not just the default one,
    the aliases by network). Aliases, as Docker's, are for user networks: given as a list they
    are the primary network's; Compose gives them by network."""
    from steps.networks import check_name

    items = [given] if isinstance(given, str) else list(given or [])
    items = items or ["bridge"]
    if len(set(items)) != len(items):
        raise BadInput(f"bad network: {', '.join(items)} names one network twice")
    if len(items) > 1 and {"none", "host"} & set(items):
        raise BadInput("bad network: none and host cannot be joined with other networks")
    for item in items:
        if item not in ("bridge", "none", "host"):
            check_name(item)
    by_network = dict(aliases) if isinstance(aliases, dict) else ({items[0]: list(aliases)} if aliases else {})
    joined = items if len(items) > 1 or items[0] not in ("bridge", "none", "host") else []
    return items[0], joined, {net: check_aliases(net, names, items) for net, names in by_network.items() if names}


def check_aliases(network: str, aliases, joined: list[str]) -> list[str]:
    from steps.names import is_name

    if network not in joined or network in ("bridge", "none", "host"):
        raise BadInput(f"bad network alias: aliases are for user-defined networks the container joins, not {network} "
                       "(network.create one and give --network NAME)")
    for alias in aliases:
        if not is_name(alias, 63):
            raise BadInput(f"bad network alias {alias!r}: use 1-63 letters, digits, '_', '.', '-'")
    return sorted(set(aliases))


def parse_network(mode: str | None, publish: list[dict], publish_all: bool = False) -> str:
    mode = mode or "bridge"
    if mode not in ("bridge", "none", "host"):
        return mode  # a user network (checked by parse_networks; its existence when the run starts)
    if mode == "none" and (publish or publish_all):
        raise BadInput("bad publish: a container with --network none has no ports to publish")
    if mode == "host" and (publish or publish_all):  # Docker's behaviour: ignored, with a warning
        import sys

        print("WARNING: Published ports are discarded when using host network mode", file=sys.stderr)
    return mode


def parse_command(argv: list[str]) -> list[str] | None:
    if not argv:
        return None
    if any("\0" in word for word in argv) or not argv[0]:
        raise BadInput("bad command: words must be non-empty and without NUL bytes")
    return list(argv)


def parse_user(user: str | None) -> str | None:
    """--user NAME|UID[:GROUP|GID]; names are looked up in the image at launch."""
    if user in (None, ""):
        return None
    name, _, group = user.partition(":")
    too_big = any(p.isdigit() and int(p) >= 2**32 - 1 for p in (name, group))
    if not _USER.fullmatch(name) or (group and not _USER.fullmatch(group)) or user.count(":") > 1 or too_big:
        raise BadInput(f"bad user {user!r}: expected NAME|UID[:GROUP|GID], e.g. nobody or 1000:1000")
    return user


def parse_entrypoint(entrypoint: str | list[str] | None) -> list[str] | None:
    """--entrypoint PATH replaces the image's Entrypoint ('' clears it), as Docker's does; a list
    (Compose's form) is the whole entrypoint with its arguments."""
    if entrypoint is None:
        return None
    words = list(entrypoint) if isinstance(entrypoint, (list, tuple)) else [entrypoint]
    if any(not isinstance(w, str) or "\0" in w for w in words):
        raise BadInput("bad entrypoint: words must be strings without NUL bytes")
    return words if words and words[0] else []  # (an empty argument after the first is an argument)


def parse_security(privileged: bool, cap_add: list[str] | None, cap_drop: list[str] | None,
                   security_opt: list[str] | None) -> dict:
    """--privileged, --cap-add, --cap-drop, --security-opt; defaults are stored as None/[] so a
    record made before these flags existed reads the same."""
    from steps.runtime.profile import DEFAULT_SECURITY_OPTS, parse_caps, parse_security_opts

    opts = parse_security_opts(security_opt)
    return {"privileged": bool(privileged), "cap_add": parse_caps(cap_add, "--cap-add"),
            "cap_drop": parse_caps(cap_drop, "--cap-drop"),
            "security_opt": None if opts == DEFAULT_SECURITY_OPTS else opts}


class RunOptions(NamedTuple):
    """The flags of `run` / `create`, as given; build() validates them into a spec. (A NamedTuple:
    dataclasses and the inspect module they import cost every run ~9 ms.)"""
    name: str | None = None
    image: str = "busybox"
    command: list[str] | tuple = ()
    env: list[str] | tuple = ()
    workdir: str | None = None
    hostname: str | None = None
    volume: list[str] | tuple = ()
    mount: list[str] | tuple = ()
    tmpfs: list[str] | tuple = ()
    read_only: bool = False
    memory: str | None = None
    cpus: str | None = None
    pids_limit: int | None = None
    rm: bool = False
    detach: bool = False
    network: str | list[str] | tuple | None = None  # repeatable: several networks, the first the primary
    publish: list[str] | tuple = ()
    user: str | None = None
    entrypoint: str | list[str] | None = None  # a list: Compose's entrypoint with its arguments
    privileged: bool = False
    cap_add: list[str] | tuple = ()
    cap_drop: list[str] | tuple = ()
    security_opt: list[str] | tuple = ()
    tty: bool = False
    interactive: bool = False
    log_opt: list[str] | tuple = ()
    env_file: list[str] | tuple = ()
    add_host: list[str] | tuple = ()
    dns: list[str] | tuple = ()
    init: bool = False
    stop_signal: str | None = None
    label: list[str] | tuple = ()
    ulimit: list[str] | tuple = ()
    shm_size: str | None = None
    publish_all: bool = False
    cidfile: str | None = None
    restart: str | None = None
    expose: list[str] | tuple = ()
    health_cmd: str | None = None
    health_interval: str | None = None
    health_timeout: str | None = None
    health_start_period: str | None = None
    health_retries: str | int | None = None
    no_healthcheck: bool = False
    # Already normalised (Compose): {"test": [...], "interval": s, "timeout": s, "start_period": s,
    # "retries": n}; the --health-* flags given override it per field.
    healthcheck: dict | None = None
    network_alias: list[str] | tuple | dict = ()  # a list: the primary network's; a dict: by network


def build(name: str, opts: RunOptions) -> dict:
    """The container's spec (its record) from the flags; refuses anything invalid."""
    vols = volumes_of(opts.volume, opts.mount, opts.tmpfs)
    check_volumes(vols)
    ports = parse_publish(opts.publish or [])
    security = parse_security(opts.privileged, opts.cap_add, opts.cap_drop, opts.security_opt)
    primary, networks, aliases = parse_networks(opts.network, opts.network_alias)
    network = parse_network(primary, ports, opts.publish_all)
    return {**security, **later_flags(opts, network), "tty": bool(opts.tty), "interactive": bool(opts.interactive),
            "network": network, "networks": networks, "aliases": aliases,
            "publish": [] if network == "host" else ports, "name": name,
            "image": canonical(opts.image), "command": parse_command(opts.command),
            "user": parse_user(opts.user), "entrypoint": parse_entrypoint(opts.entrypoint),
            "env": parse_env_files(opts.env_file) + parse_env(opts.env), "workdir": parse_workdir(opts.workdir),
            "hostname": parse_hostname(opts.hostname), "volumes": vols, "memory": parse_memory(opts.memory),
            "cpus": parse_cpus(opts.cpus), "pids_limit": parse_pids(opts.pids_limit), "rm": bool(opts.rm),
            "read_only": bool(opts.read_only),
            "log_opts": parse_log_opts(opts.log_opt) if opts.log_opt else None,  # None: the defaults
            "restart": parse_restart(opts.restart, opts.rm),
            "id": os.urandom(32).hex(), "created": now_iso(), "last": {}}


def later_flags(opts: RunOptions, network: str) -> dict:
    """--add-host, --dns, --init, --stop-signal, --label, --ulimit, --shm-size, -P, --cidfile, --health-*."""
    from steps import runflags as rf

    return {"add_hosts": rf.parse_add_hosts(opts.add_host), "dns": rf.parse_dns(opts.dns),
            "init": rf.check_init(opts.init), "stop_signal": rf.parse_stop_signal(opts.stop_signal),
            "labels": rf.parse_labels(opts.label), "ulimits": rf.parse_ulimits(opts.ulimit),
            "shm_size": rf.parse_shm_size(opts.shm_size),
            "publish_all": bool(opts.publish_all) and network not in ("none", "host"),
            "cidfile": rf.check_cidfile(opts.cidfile),
            "expose": parse_expose(opts.expose), "healthcheck": parse_healthcheck(opts)}


def parse_expose(items: list[str]) -> list[str]:
    """--expose PORT[/PROTO] (repeatable): ports -P publishes besides the image's, as "80/tcp"."""
    from steps.ports import parse_port

    return sorted({"{}/{}".format(*parse_port(item)) for item in items or []})


def same(a: dict, b: dict) -> bool:
    return not differences(a, b)


def differences(a: dict, b: dict) -> list[str]:
    """The spec keys that differ; a missing key reads as its empty default (older records)."""
    return [k for k in SPEC_KEYS if _given(a, k) != _given(b, k)]


def _given(spec: dict, key: str):
    """A spec value as the user gave it: the host ports -P chose ("auto") are not part of it."""
    value = spec.get(key)
    if key == "volumes":
        value = normal_volumes(value)
    if key == "publish":
        value = [p for p in value or [] if not p.get("auto")]
    return value or None
