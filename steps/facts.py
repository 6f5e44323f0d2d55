"""Read-only probes of the system: mounts, processes, cgroup hierarchies.

Small pure parsers (tested on captured text) plus thin readers of /proc.
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple


class Mount(NamedTuple):
    mount_id: int
    parent_id: int
    root: str
    mount_point: str
    options: frozenset[str]
    fstype: str
    source: str
    super_options: frozenset[str]


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/PID/mountinfo (proc(5))."""
    mounts = []
    for line in text.splitlines():
        if not line.strip():
            continue
        left, _, right = line.partition(" - ")
        f = left.split(" ")
        r = right.split(" ")
        mounts.append(Mount(int(f[0]), int(f[1]), _unescape(f[3]), _unescape(f[4]),
                            frozenset(f[5].split(",")), r[0], _unescape(r[1]),
                            frozenset(r[2].split(",")) if len(r) > 2 else frozenset()))
    return mounts


def mounts() -> list[Mount]:
    with open("/proc/self/mountinfo") as f:
        return parse_mountinfo(f.read())


def mounts_at(path: str) -> list[Mount]:
    """Mounts whose mount point is exactly path (a stack, oldest first)."""
    path = os.path.normpath(path)
    return [m for m in mounts() if m.mount_point == path]


def mounts_below(path: str) -> list[Mount]:
    """Mounts strictly below path, deepest first (the order to unmount them)."""
    prefix = os.path.normpath(path) + "/"
    found = [m for m in mounts() if m.mount_point.startswith(prefix)]
    return sorted(found, key=lambda m: (m.mount_point.count("/"), m.mount_id), reverse=True)


def parse_overlay_options(super_options: frozenset[str]) -> dict[str, str]:
    opts = {}
    for opt in super_options:
        key, _, value = opt.partition("=")
        opts[key] = value
    return opts


# --- processes ---------------------------------------------------------------

def parse_stat(text: str) -> tuple[str, int]:
    """(state, start time in clock ticks) from /proc/PID/stat; comm may hold spaces."""
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); field 22 (starttime) is rest[19]
    return rest[0], int(rest[19])


def process_start(pid: int) -> int | None:
    """Start time of a live (not zombie) process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state, start = parse_stat(f.read())
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None
    return None if state in ("Z", "X", "x") else start


def process_alive(pid: int | None, start: int | None) -> bool:
    """True when pid runs and is the same process (its start time matches)."""
    return bool(pid) and start is not None and process_start(pid) == start


def parse_status_mask(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1], 16)
    return 0


def catches_signal(pid: int, signo: int) -> bool:
    """Whether pid installed a handler for signo (SigCgt in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = parse_status_mask(f.read(), "SigCgt")
    except FileNotFoundError:
        return False
    return bool(mask & (1 << (signo - 1)))


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


# --- cgroups -----------------------------------------------------------------

class Hierarchy(NamedTuple):
    """One mounted cgroup hierarchy: v2 (unified) or v1 with its controllers."""

    version: int
    root: str
    controllers: frozenset[str]
    name: str = ""  # a named v1 hierarchy without controllers, e.g. "name=systemd"


def parse_hierarchies(mount_list: list[Mount], v2_controllers: str) -> list[Hierarchy]:
    found, seen = [], set()
    for m in mount_list:
        if m.fstype == "cgroup2" and m.root == "/" and "cgroup2" not in seen:
            seen.add("cgroup2")
            found.append(Hierarchy(2, m.mount_point, frozenset(v2_controllers.split())))
        elif m.fstype == "cgroup" and m.root == "/":
            ctrls = frozenset(o for o in m.super_options if o in V1_CONTROLLERS)
            name = next((o for o in sorted(m.super_options) if o.startswith("name=")), "")
            key = ctrls or frozenset([name])
            if (ctrls or name) and key not in seen:
                seen.add(key)
                found.append(Hierarchy(1, m.mount_point, ctrls, "" if ctrls else name))
    return found


V1_CONTROLLERS = {"memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer",
                  "hugetlb", "net_cls", "net_prio", "perf_event", "rdma", "misc"}


@functools.lru_cache(maxsize=1)
def cgroup_hierarchies() -> tuple[Hierarchy, ...]:
    """The mounted hierarchies; read once per process, as they do not move while we run."""
    all_mounts = mounts()
    v2 = [m for m in all_mounts if m.fstype == "cgroup2" and m.root == "/"]
    controllers = ""
    if v2:
        try:
            with open(os.path.join(v2[0].mount_point, "cgroup.controllers")) as f:
                controllers = f.read()
        except OSError:
            pass
    return tuple(parse_hierarchies(all_mounts, controllers))


def controller_hierarchies(wanted: tuple[str, ...] = ("memory", "cpu", "pids")) -> dict[str, Hierarchy]:
    """For each wanted controller, the hierarchy that has it: v2 first, else v1."""
    hierarchies = cgroup_hierarchies()
    chosen = {}
    for ctrl in wanted:
        v2 = [h for h in hierarchies if h.version == 2 and ctrl in h.controllers]
        v1 = [h for h in hierarchies if h.version == 1 and ctrl in h.controllers]
        if v2 or v1:
            chosen[ctrl] = (v2 or v1)[0]
    return chosen


def own_permitted() -> int:
    """This process's permitted set: a container cannot get what its runtime lacks (a host that
    confines us, e.g. without CAP_SYS_RESOURCE, confines --privileged containers too)."""
    with open("/proc/self/status") as f:
        return parse_status_mask(f.read(), "CapPrm")


def tree_size(path: str) -> int:
    """Bytes of the files under path (as `du --apparent-size`), links not followed."""
    total = 0
    for dirpath, _dirs, filenames in os.walk(path):
        for f in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                continue
    return total
