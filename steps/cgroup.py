"""The cgroup stage: the container's cgroup with memory / cpu / pids limits, v2 or v1.

Each controller is taken from the v2 hierarchy when it offers it, else from
the v1 hierarchy that has it (hybrid hosts mix both). See cgroups(7),
https://docs.kernel.org/admin-guide/cgroup-v2.html and the v1 docs
(memory.limit_in_bytes, cpu.cfs_quota_us, pids.max).
"""
from __future__ import annotations

import errno
import os
import re
import time

from steps import BadInput, Change, Step, StepFailed, absent, applied, faults, partial
from steps.facts import Hierarchy, cgroup_hierarchies, controller_hierarchies
from steps.runtime.cgroups import fill_cpuset, kill_order, kill_tree, subtree
from steps.state import read_value as read
from steps.state import write_value as write

CPU_PERIOD = 100000
V1_UNLIMITED = 9223372036854771712
MIN_MEMORY = 6 * 1024 * 1024  # as Docker: smaller limits kill the container's own init
_SIZE = re.compile(r"^([0-9]+)([bkmgt]?)b?$", re.IGNORECASE)


def parse_memory(text: str | None) -> int | None:
    """'64M' -> bytes rounded down to a page, as the kernel stores them."""
    if text in (None, ""):
        return None
    m = _SIZE.match(str(text).strip())
    if not m:
        raise BadInput(f"bad memory size {text!r}: expected a number with an optional unit b, k, m, g, "
                       "e.g. 64M or 1g")
    value = int(m.group(1)) * 1024 ** "bkmgt".index((m.group(2) or "b").lower())
    if value < MIN_MEMORY:
        raise BadInput(f"bad memory size {text!r}: the minimum is 6M")
    page = os.sysconf("SC_PAGE_SIZE")
    return value // page * page


def parse_cpus(text) -> float | None:
    if text in (None, ""):
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise BadInput(f"bad cpus {text!r}: expected a number of CPUs, e.g. 0.5 or 2") from None
    if not 0.01 <= value <= os.cpu_count() * 1.0 or value != value:
        raise BadInput(f"bad cpus {text!r}: must be between 0.01 and {os.cpu_count()} (this host's CPUs)")
    return value


def parse_pids(value) -> int | None:
    if value in (None, "", 0):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BadInput(f"bad pids limit {value!r}: expected a whole number, e.g. 64") from None
    if n < 1:
        raise BadInput(f"bad pids limit {value!r}: must be at least 1")
    return n


def desired_files(h: Hierarchy, spec: dict) -> dict[str, str]:
    """The limit files of one hierarchy and their desired contents, in the kernel's form."""
    mem, cpus, pids = spec.get("memory"), spec.get("cpus"), spec.get("pids_limit")
    quota = round(cpus * CPU_PERIOD) if cpus else None
    files: dict[str, str] = {}
    ctrls = h.controllers
    if h.version == 2:
        if "memory" in ctrls:
            files["memory.max"] = str(mem) if mem else "max"
            files["memory.swap.max"] = "0" if mem else "max"
        if "cpu" in ctrls:
            files["cpu.max"] = f"{quota if quota else 'max'} {CPU_PERIOD}"
        if "pids" in ctrls:
            files["pids.max"] = str(pids) if pids else "max"
        return files
    if "memory" in ctrls:
        files["memory.limit_in_bytes"] = str(mem or V1_UNLIMITED)
        files["memory.memsw.limit_in_bytes"] = str(mem or V1_UNLIMITED)
    if "cpu" in ctrls:
        files["cpu.cfs_period_us"] = str(CPU_PERIOD)
        files["cpu.cfs_quota_us"] = str(quota if quota else -1)
    if "pids" in ctrls:
        files["pids.max"] = str(pids) if pids else "max"
    return files


def hierarchies() -> list[Hierarchy]:
    """Every mounted hierarchy: the container gets its own cgroup in each (a process left in
    the host's root cgroup of, say, freezer or devices could reach the host's release_agent)."""
    if not controller_hierarchies():
        raise StepFailed("cannot find a cgroup hierarchy with memory, cpu or pids; is cgroupfs mounted?")
    return list(cgroup_hierarchies())


def cgroup_dirs(cgroup_path: str) -> list[tuple[Hierarchy, str]]:
    return [(h, os.path.join(h.root, cgroup_path)) for h in hierarchies()]


def join(cgroup_path: str, pid: int) -> None:
    """Move pid into the container's cgroup in every hierarchy (before it execs)."""
    for _, d in cgroup_dirs(cgroup_path):
        write(os.path.join(d, "cgroup.procs"), str(pid))


def oom_kills(cgroup_path: str) -> int:
    """How many processes the memory limit has killed in this cgroup."""
    for h, d in cgroup_dirs(cgroup_path):
        if "memory" in h.controllers:
            text = read(os.path.join(d, "memory.events" if h.version == 2 else "memory.oom_control")) or ""
            m = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
            return int(m.group(1)) if m else 0
    return 0


def _same(name: str, have: str | None, want: str) -> bool:
    if have is None:
        return False
    if want == str(V1_UNLIMITED) and have.isdigit():
        return int(have) >= V1_UNLIMITED  # "unlimited" is page-rounded by the kernel
    return have == want


def device_rules(spec: dict):
    from steps.runtime import devices

    return devices.default_rules(bool(spec.get("privileged")))


def devices_differ(h: Hierarchy, d: str, spec: dict) -> bool:
    """Whether the device allowlist is missing: the v1 devices controller, else (pure v2, no v1
    devices hierarchy) a BPF device program on the v2 cgroup."""
    from steps.runtime import devices

    if h.version == 1 and "devices" in h.controllers:
        return not devices.v1_matches(d, device_rules(spec))
    if h.version == 2 and not has_v1_devices():
        return devices.v2_attached(d) < 1
    return False


def has_v1_devices() -> bool:
    return any(h.version == 1 and "devices" in h.controllers for h in cgroup_hierarchies())


class CgroupStep(Step):
    name = "cgroup"

    @property
    def path(self) -> str:
        return self.ctx.names.cgroup_path

    def check(self):
        changes, present = [], 0
        for h, d in cgroup_dirs(self.path):
            if not os.path.isdir(d):
                changes.append(Change(f"mkdir {d}"))
                continue
            present += 1
            for name, want in desired_files(h, self.ctx.spec).items():
                have = read(os.path.join(d, name))
                if have is not None and not _same(name, have, want):
                    changes.append(Change(f"{d}/{name}", have, want))
            if devices_differ(h, d, self.ctx.spec):
                changes.append(Change(f"device allowlist of {d}", "absent", "Docker's default"
                                      if not self.ctx.spec.get("privileged") else "all (privileged)"))
        if not changes:
            return applied(f"{self.path} ({self.summary()})")
        return (partial if present else absent)(changes)

    def summary(self) -> str:
        s = self.ctx.spec
        parts = [f"memory={s['memory']}" if s.get("memory") else "",
                 f"cpus={s['cpus']}" if s.get("cpus") else "",
                 f"pids={s['pids_limit']}" if s.get("pids_limit") else ""]
        return ", ".join(p for p in parts if p) or "no limits"

    def apply(self):
        for h, d in cgroup_dirs(self.path):
            self.make(h, d)
            faults.point("cgroup.apply.mid")
            for name, want in desired_files(h, self.ctx.spec).items():
                self.write_limit(d, name, want)
            if devices_differ(h, d, self.ctx.spec):
                self.limit_devices(h, d)

    def limit_devices(self, h: Hierarchy, d: str) -> None:
        from steps.runtime import devices

        if h.version == 1:
            devices.v1_apply(d, device_rules(self.ctx.spec))
        else:
            devices.v2_attach(d, device_rules(self.ctx.spec))

    def make(self, h: Hierarchy, d: str) -> None:
        parent = os.path.dirname(d)
        for _attempt in range(50):  # another container's undo may remove the parent meanwhile
            try:
                os.makedirs(parent, exist_ok=True)
                if h.version == 2:
                    self.enable_controllers(h, parent)
                os.makedirs(d, exist_ok=True)
                fill_cpuset(h, d)
                return
            except FileNotFoundError:
                time.sleep(0.01)
        raise StepFailed(f"cannot create cgroup {d}: its parent keeps disappearing")

    def enable_controllers(self, h: Hierarchy, parent: str) -> None:
        """v2 only offers a controller to children when every ancestor enables it."""
        wanted = [c for c in ("memory", "cpu", "pids") if c in h.controllers]
        rel = os.path.relpath(parent, h.root)
        current = h.root
        for part in ([] if rel == "." else rel.split("/")) + [None]:
            enabled = (read(os.path.join(current, "cgroup.subtree_control")) or "").split()
            missing = " ".join(f"+{c}" for c in wanted if c not in enabled)
            if missing:
                write(os.path.join(current, "cgroup.subtree_control"), missing)
            if part is None:
                break
            current = os.path.join(current, part)

    def write_limit(self, d: str, name: str, want: str) -> None:
        path = os.path.join(d, name)
        if not os.path.exists(path) or _same(name, read(path), want):
            return  # memsw/swap files exist only with swap accounting
        try:
            write(path, want)
        except OSError as e:
            if e.errno != errno.EINVAL or "memsw" not in name and "limit_in_bytes" not in name:
                raise
            # v1 requires memory <= memsw at every moment: write the pair in the other order
            other = name.replace("memory.limit", "memory.memsw.limit") if "memsw" not in name \
                else name.replace("memory.memsw.limit", "memory.limit")
            write(os.path.join(d, other), want)
            write(path, want)

    def undo(self):
        found = [(h, d) for h, d in cgroup_dirs(self.path) if os.path.isdir(d)]
        for h, d in sorted(found, key=lambda hd: kill_order(hd[0])):  # a process is in one cgroup of each
            kill_tree(h, d)
        faults.point("cgroup.undo.mid")
        for h, d in found:
            for sub in subtree(d):
                self.remove(h, sub)
        for _, d in cgroup_dirs(self.path):
            try:
                os.rmdir(os.path.dirname(d))  # the instance's parent, when this was its last
            except OSError:
                pass

    def remove(self, h: Hierarchy, d: str) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(d)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise OSError(e.errno, f"cannot remove cgroup {d}: {e.strerror}") from None
                kill_tree(h, d)
                time.sleep(0.01)
