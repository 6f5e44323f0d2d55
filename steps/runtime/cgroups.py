"""The container's cgroup trees on the host: walking them, filling v1 cpusets, and emptying them
(killing what is inside, thawing what a container froze) before they are removed.

Used by the cgroup stage (steps/cgroup.py); the kernel's rules are in cgroups(7),
cgroup-v1/cpusets.rst, cgroup-v1/freezer-subsystem.rst and cgroup-v2.rst.
"""
from __future__ import annotations

import os
import signal
import time

from steps.facts import Hierarchy
from steps.state import read_value as read
from steps.state import write_value as write


def procs(directory: str) -> list[int]:
    text = read(os.path.join(directory, "cgroup.procs")) or ""
    return [int(p) for p in text.split()]


def subtree(d: str) -> list[str]:
    """d and every cgroup below it (made by a container that could write its cgroupfs),
    deepest first: the order rmdir needs."""
    found = [dirpath for dirpath, _, _ in os.walk(d)]
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def fill_cpuset(h: Hierarchy, d: str) -> None:
    """A v1 cpuset cgroup takes no task until cpus and mems are set: copy them down from the
    nearest ancestor that has them (cgroup-v1/cpusets.rst)."""
    if "cpuset" not in h.controllers or h.version != 1:
        return
    rel = os.path.relpath(d, h.root)
    current = h.root
    for part in rel.split("/"):
        parent, current = current, os.path.join(current, part)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not (read(os.path.join(current, name)) or "").strip():
                write(os.path.join(current, name), read(os.path.join(parent, name)) or "")


def kill_order(h: Hierarchy) -> int:
    """v2 first (cgroup.kill: the whole subtree at once, no pid to reuse), then the v1 freezer
    (frozen, nothing forks or exits while pids are read and killed), then the rest."""
    return 0 if h.version == 2 else 1 if "freezer" in h.controllers else 2


def kill_tree(h: Hierarchy, d: str, timeout: float = 10) -> None:
    """SIGKILL to everything in d and below, until it is empty. A subtree the container froze
    itself (a privileged one can) is thawed, or the kills would wait for ever."""
    if not any(procs(sub) for sub in subtree(d)):
        return  # the usual case: the container has exited already
    if os.path.exists(os.path.join(d, "cgroup.kill")):
        write(os.path.join(d, "cgroup.kill"), "1")  # v2: frozen tasks die of it too
    freezer = "freezer" in h.controllers
    if freezer:
        freeze(d)
    deadline = time.monotonic() + timeout
    while (pids := [p for sub in subtree(d) for p in procs(sub)]) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if freezer:
            thaw(d)  # a v1 SIGKILL lands on a frozen task only once it is thawed
        time.sleep(0.01)
    if freezer:
        thaw(d)


def freeze(d: str) -> None:
    """v1: freeze d (cgroup-v1/freezer-subsystem.rst), briefly waiting until it is, so that
    nothing forks or exits (no pid reused) while its pids are read and killed."""
    state = os.path.join(d, "freezer.state")
    try:
        write(state, "FROZEN")
    except OSError:
        return
    for _ in range(50):
        if (read(state) or "").strip() == "FROZEN":
            return
        time.sleep(0.002)


def thaw(d: str) -> None:
    """v1: THAWED in d and every cgroup below (a child frozen by itself stays frozen otherwise)."""
    for sub in subtree(d):
        try:
            if (read(os.path.join(sub, "freezer.state")) or "THAWED").strip() != "THAWED":
                write(os.path.join(sub, "freezer.state"), "THAWED")
        except OSError:
            pass
