"""`stats`: CPU, memory, PIDs and block I/O from each container's cgroup (v2 files, else v1),
network I/O from its host veth, in docker stats' columns.

CPU % is the CPU time used between two samples over the wall time between them (Docker's
cpu_delta / system_delta * online CPUs comes to the same). Memory usage leaves the page cache
that could be dropped (inactive_file) out, as Docker does; without a limit the host's memory
is the limit. The host end of the veth pair counts the other way round: its rx is the
container's tx. Files: cgroup-v2.rst (memory.current, cpu.stat, io.stat, pids.current) and
cgroup-v1 (memory.usage_in_bytes, cpuacct.usage, blkio.throttle.io_service_bytes_recursive).
"""
from __future__ import annotations

import os
import re
import sys
import time

from steps import config
from steps.names import Names
from steps.state import read_value

HEADERS = {"ID": "CONTAINER ID", "Container": "CONTAINER", "Name": "NAME", "CPUPerc": "CPU %",
           "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O",
           "PIDs": "PIDS"}
TABLE = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"
V1_UNLIMITED = 1 << 62  # v1 writes "no limit" as a page-rounded 2^63 - 1


def _int(path: str) -> int | None:
    text = read_value(path)
    return int(text) if text and text.lstrip("-").isdigit() else None


def _keyed(path: str) -> dict[str, int]:
    """A flat keyed file (memory.stat, cpu.stat): 'key value' per line."""
    out = {}
    for line in (read_value(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def parse_io_v2(text: str) -> tuple[int, int]:
    """io.stat: '8:0 rbytes=1 wbytes=2 rios=...' per device -> (read, written)."""
    read = sum(int(n) for n in re.findall(r"\brbytes=(\d+)", text))
    return read, sum(int(n) for n in re.findall(r"\bwbytes=(\d+)", text))


def parse_io_v1(text: str) -> tuple[int, int]:
    """blkio.throttle.io_service_bytes_recursive: '8:0 Read 4096' per device and op."""
    read = sum(int(n) for n in re.findall(r"^\S+ Read (\d+)$", text, re.MULTILINE))
    return read, sum(int(n) for n in re.findall(r"^\S+ Write (\d+)$", text, re.MULTILINE))


def host_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def cgroup_sample(cgroup_path: str) -> dict:
    """cpu_ns, mem, limit, pids, blk (read, write) of one container, from whichever hierarchy
    holds each controller."""
    from steps.cgroup import cgroup_dirs

    s = {"cpu_ns": 0, "mem": 0, "limit": None, "pids": 0, "blk": (0, 0)}
    for h, d in cgroup_dirs(cgroup_path):
        if not os.path.isdir(d):
            continue
        c = h.controllers
        if h.version == 2:
            if "memory" in c:
                stat = _keyed(f"{d}/memory.stat")
                s["mem"] = max(0, (_int(f"{d}/memory.current") or 0) - stat.get("inactive_file", 0))
                s["limit"] = _int(f"{d}/memory.max")
            s["cpu_ns"] = _keyed(f"{d}/cpu.stat").get("usage_usec", 0) * 1000 or s["cpu_ns"]
            s["pids"] = _int(f"{d}/pids.current") or s["pids"] if "pids" in c else s["pids"]
            if "io" in c:
                s["blk"] = parse_io_v2(read_value(f"{d}/io.stat") or "")
            continue
        if "memory" in c:
            stat = _keyed(f"{d}/memory.stat")
            s["mem"] = max(0, (_int(f"{d}/memory.usage_in_bytes") or 0) - stat.get("total_inactive_file", 0))
            limit = _int(f"{d}/memory.limit_in_bytes")
            s["limit"] = limit if limit and limit < V1_UNLIMITED else None
        if "cpuacct" in c:
            s["cpu_ns"] = _int(f"{d}/cpuacct.usage") or 0
        if "pids" in c:
            s["pids"] = _int(f"{d}/pids.current") or 0
        if "blkio" in c:
            s["blk"] = parse_io_v1(read_value(f"{d}/blkio.throttle.io_service_bytes_recursive") or "")
    return s


def net_sample(names: Names, record: dict) -> tuple[int, int] | None:
    """(container rx, container tx) from the host veth; None when it has no veth of its own."""
    from steps.networks import attached

    on = attached(names.instance, record, strict=False)
    rx = tx = 0
    for network in on:  # every network's host end (its tx is the container's rx)
        base = f"/sys/class/net/{Names(network, names.container).host_veth}/statistics"
        rx, tx = rx + (_int(f"{base}/tx_bytes") or 0), tx + (_int(f"{base}/rx_bytes") or 0)
    return (rx, tx) if on else None


def row(names: Names, record: dict, first: dict | None, second: dict | None, wall: float) -> dict:
    from steps.cli.columns import human_size
    from steps.views import container_id

    cid = container_id(record)
    if second is None:  # not running: Docker's zero line
        return {"ID": cid[:12], "Container": names.container, "Name": names.container, "CPUPerc": "0.00%",
                "MemUsage": "0B / 0B", "MemPerc": "0.00%", "NetIO": "0B / 0B", "BlockIO": "0B / 0B", "PIDs": "0"}
    cpu = (second["cpu_ns"] - first["cpu_ns"]) / (wall * 1e9) * 100 if wall > 0 else 0.0
    limit = second["limit"] or host_memory()
    net = second.get("net")
    return {"ID": cid[:12], "Container": names.container, "Name": names.container,
            "CPUPerc": f"{max(cpu, 0.0):.2f}%",
            "MemUsage": f"{human_size(second['mem'], binary=True)} / {human_size(limit, binary=True)}",
            "MemPerc": f"{second['mem'] / limit * 100 if limit else 0:.2f}%",
            "NetIO": "--" if net is None else f"{human_size(net[0])} / {human_size(net[1])}",
            "BlockIO": f"{human_size(second['blk'][0])} / {human_size(second['blk'][1])}",
            "PIDs": str(second["pids"]),
            "_raw": {**second, "limit": limit, "cpu_percent": cpu}}


def targets(refs: list[str], all: bool) -> list[tuple[Names, dict]]:
    from steps.state import existing_container
    from steps.views import containers, state_of

    if not refs:
        return [(n, r) for n, r in containers() if all or str(state_of(n, r)["state"]).startswith("running")]
    instance = config.load()
    return [existing_container(instance, ref) for ref in refs]


def sample_all(chosen: list[tuple[Names, dict]], interval: float) -> list[dict]:
    """Two samples interval apart of every running one (one wait for all)."""
    from steps.cli.containers import running_pid

    live = {n.container: running_pid(n, with_monitor=False) is not None for n, _ in chosen}
    first = {n.container: cgroup_sample(n.cgroup_path) for n, _ in chosen if live[n.container]}
    start = time.monotonic()
    time.sleep(interval if first else 0)
    wall = time.monotonic() - start
    rows = []
    for names, record in chosen:
        second = None
        if live[names.container]:
            second = {**cgroup_sample(names.cgroup_path), "net": net_sample(names, record)}
        rows.append(row(names, record, first.get(names.container), second, wall))
    return rows


def stats(refs: list[str] | str | None = None, no_stream: bool = False, all: bool = False,
          fmt: str | None = None, interval: float = 0.5) -> int:
    """One table of samples with --no-stream; else refreshed every second until Ctrl-C."""
    from steps.cli.columns import render
    from steps.cli.listing import check_format

    check_format(fmt)
    refs = [refs] if isinstance(refs, str) else list(refs or [])
    while True:
        chosen = targets(refs, all)
        lines = render([{k: v for k, v in r.items() if k != "_raw"} for r in sample_all(chosen, interval)],
                       fmt or TABLE, HEADERS)
        if not no_stream and sys.stdout.isatty():
            sys.stdout.write("\033[2J\033[H")
        print("\n".join(lines), flush=True)
        if no_stream:
            return 0
        time.sleep(max(0.0, 1.0 - interval))
