"""-P (--publish-all): the image's ExposedPorts on free host ports, chosen at create; and `port`."""
from __future__ import annotations

import errno
import os
import random
import re
import socket

from steps import BadInput, DiyError

PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
_PORT = re.compile(r"^([0-9]{1,5})(?:/(tcp|udp|sctp))?$")


def exposed_ports(config: dict) -> list[tuple[int, str]]:
    """The image config's ExposedPorts ({"80/tcp": {}, "53/udp": {}}), tcp when unsaid; sctp and
    anything unreadable skipped (we publish tcp and udp only)."""
    found = []
    for key in (config.get("ExposedPorts") or {}):
        m = _PORT.fullmatch(str(key))
        if m and 1 <= int(m[1]) <= 65535 and (m[2] or "tcp") in ("tcp", "udp"):
            found.append((int(m[1]), m[2] or "tcp"))
    return sorted(set(found))


def ephemeral_range() -> tuple[int, int]:
    try:
        with open(PORT_RANGE) as f:
            low, high = (int(x) for x in f.read().split()[:2])
    except (OSError, ValueError):
        low, high = 32768, 60999  # the kernel's default
    return low, high


def bindable(port: int, proto: str) -> bool:
    """Nothing on the host listens on 0.0.0.0:port for proto (no SO_REUSEADDR: a port in use
    anyhow is refused)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def instance_ports(instance, without: str) -> set[tuple[int, str]]:
    """Host ports any other container record of the instance publishes, running or not: start
    reuses them, so they stay reserved."""
    from steps.names import Names, containers_dir
    from steps.state import load_record

    root = containers_dir(instance)
    taken = set()
    for name in os.listdir(root) if os.path.isdir(root) else []:
        if name != without:
            for p in (load_record(Names(instance, name)) or {}).get("publish") or []:
                taken.add((p["host_port"], p["proto"]))
    return taken


def choose(proto: str, taken: set[tuple[int, str]]) -> int:
    """A free host port of the ephemeral range. The walk starts at a random point (Docker's starts
    at the bottom): two instances choosing at once then rarely pick the same."""
    low, high = ephemeral_range()
    start = random.randint(low, high)
    for i in range(high - low + 1):
        port = low + (start - low + i) % (high - low + 1)
        if (port, proto) not in taken and bindable(port, proto):
            return port
    raise DiyError(f"cannot publish a {proto} port: no free host port in {low}-{high}")


def assign(ctx) -> None:
    """-P: every exposed port not published by -p gets a host port, written into the spec's
    "publish" (marked auto) so that start reuses it."""
    from steps.image import runtime_config
    from steps.image.store import Store
    from steps.network import joined

    spec = ctx.spec
    if not joined(spec):
        return
    taken = instance_ports(ctx.instance, ctx.names.container) | {(p["host_port"], p["proto"]) for p in spec["publish"]}
    for p in spec["publish"]:  # -p 80: a host port of the ephemeral range, as Docker
        if not p["host_port"]:
            p["host_port"] = choose(p["proto"], taken)
            taken.add((p["host_port"], p["proto"]))
    if not spec.get("publish_all"):
        return
    config = runtime_config(Store(ctx.instance).resolve(spec["image"]))
    exposed = {**(config.get("ExposedPorts") or {}), **{e: {} for e in spec.get("expose") or []}}
    given = {(p["container_port"], p["proto"]) for p in spec["publish"]}
    for port, proto in exposed_ports({"ExposedPorts": exposed}):
        if (port, proto) in given:
            continue
        host_port = choose(proto, taken)
        taken.add((host_port, proto))
        spec["publish"].append({"host_ip": "0.0.0.0", "host_port": host_port, "container_port": port,
                                "proto": proto, "auto": True})


def parse_port(text: str | None) -> tuple[int, str] | None:
    if text in (None, ""):
        return None
    m = _PORT.fullmatch(str(text))
    if not m or not 1 <= int(m[1]) <= 65535 or m[2] == "sctp":
        raise BadInput(f"bad port {text!r}: expected PORT[/tcp|/udp], e.g. 80 or 53/udp")
    return int(m[1]), m[2] or "tcp"


def port(ref: str, asked: str | None) -> int:
    """Docker's `port`: "80/tcp -> 0.0.0.0:8080" per published port of a running container, or
    the host addresses of the one asked."""
    from steps import config
    from steps.launch import runtime_facts
    from steps.state import existing_container

    want = parse_port(asked)
    names, record = existing_container(config.load(), ref)
    ports = sorted(record.get("publish") or [], key=lambda p: (p["container_port"], p["proto"], p["host_port"]))
    if not runtime_facts(names)[1]:
        ports = []  # as Docker: a stopped container holds no host port
    if want is None:
        for p in ports:
            print(f"{p['container_port']}/{p['proto']} -> {p['host_ip']}:{p['host_port']}")
        return 0
    match = [p for p in ports if (p["container_port"], p["proto"]) == want]
    if not match:
        raise DiyError(f"no public port '{want[0]}/{want[1]}' published for {names.container}")
    for p in match:
        print(f"{p['host_ip']}:{p['host_port']}")
    return 0
