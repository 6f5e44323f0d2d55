"""Device confinement: which device nodes a container may create (mknod), read and write.

The rules are Docker's default allow list (steps/profiles/default.json "devices"); anything
not allowed is denied. The kernel enforces them in one of two ways:

cgroup v1  the devices controller's files, Documentation/admin-guide/cgroup-v1/devices.rst:
           "a" to devices.deny empties the list and makes the default deny, then one line
           per rule to devices.allow; devices.list prints the result.
cgroup v2  there is no devices controller: a BPF_PROG_TYPE_CGROUP_DEVICE program attached
           to the cgroup decides each access (include/uapi/linux/bpf.h, struct
           bpf_cgroup_dev_ctx); it is released with the cgroup, so undo is the rmdir.
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

from steps import BadInput, linux
from steps.profiles import defaults
from steps.state import read_value, write_value

ACCESS = "rwm"  # the access letters of a rule: mknod, read, write
MAX_NUMBER = 0x7FFFFFFF  # an eBPF immediate is a signed 32-bit int, sign-extended in 64-bit jumps


def _num(n: int | None) -> str:
    """A device number as the kernel prints it: * for any."""
    return "*" if n is None else str(n)


class _Fields(NamedTuple):
    type: str
    major: int | None
    minor: int | None
    access: str


class Rule(_Fields):
    """One allow rule, as devices.allow reads it: type a|c|b, major/minor (None: any), access some of rwm.
    (A NamedTuple checked on creation, not a dataclass: that import costs every run ~7 ms.)"""

    __slots__ = ()

    def __new__(cls, type: str, major: int | None, minor: int | None, access: str) -> Rule:  # noqa: A002
        rule = super().__new__(cls, type, major, minor, access)
        rule.refuse_bad()
        return rule

    def refuse_bad(self) -> None:
        """Refuse what the kernel would refuse or misread."""
        what = f"bad device rule {self.type} {_num(self.major)}:{_num(self.minor)} {self.access}"
        if self.type not in ("a", "c", "b"):
            raise BadInput(f"{what}: the type must be a (all), c (char) or b (block)")
        if not self.access or set(self.access) - set(ACCESS) or len(set(self.access)) != len(self.access):
            raise BadInput(f"{what}: the access must be some of r, w, m")
        for n in (self.major, self.minor):
            if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_NUMBER):
                raise BadInput(f"{what}: a device number must be a whole number from 0 to {MAX_NUMBER} or *")
        # devices.allow reads "a" as "allow everything" whatever follows it: anything
        # narrower written with type a would silently open every device.
        if self.type == "a" and (self.major is not None or self.minor is not None or set(self.access) != set(ACCESS)):
            raise BadInput(f"{what}: type a only means every device, a *:* rwm")

    @property
    def is_all(self) -> bool:
        """Type a: every device, every access."""
        return self.type == "a"

    def access_set(self) -> frozenset[str]:
        """The access letters, order aside."""
        return frozenset(self.access)

    @property
    def every_access(self) -> bool:
        return self.access_set() == frozenset(ACCESS)


class Node(NamedTuple):
    """A device node the container's /dev gets."""

    path: str
    type: str
    major: int
    minor: int


ALLOW_ALL = Rule("a", None, None, ACCESS)


def _profile_devices() -> list[dict]:
    """The "devices" entries of Docker's default profile."""
    return defaults()["devices"]


def _rule(entry: dict) -> Rule:
    """A profile entry (null numbers: any) -> Rule."""
    return Rule(entry["type"], entry.get("major"), entry.get("minor"), entry["access"])


def default_rules(privileged: bool) -> list[Rule]:
    """Docker's default allow list; privileged containers may use every device."""
    return list(_default_rules(privileged))


@functools.lru_cache(maxsize=2)
def _default_rules(privileged: bool) -> tuple[Rule, ...]:
    if privileged:
        return (ALLOW_ALL,)
    return tuple(_rule(entry) for entry in _profile_devices())


def standard_nodes() -> list[Node]:
    """The nodes made in every container's /dev: the profile's rules with a concrete path."""
    nodes = []
    for entry in _profile_devices():
        path, rule = entry.get("path"), _rule(entry)
        if path and "*" not in path and rule.major is not None and rule.minor is not None:
            nodes.append(Node(path, rule.type, rule.major, rule.minor))
    return nodes


def parse_line(line: str) -> Rule:
    """'c 1:3 rwm' (devices.list's and devices.allow's format) -> Rule."""
    try:
        kind, numbers, access = line.split()
        major, minor = numbers.split(":")
        return Rule(kind, None if major == "*" else int(major), None if minor == "*" else int(minor), access)
    except ValueError:
        raise BadInput(f"bad device rule {line!r}: expected TYPE MAJOR:MINOR ACCESS, e.g. c 1:3 rwm") from None


def allows_all(rules: list[Rule]) -> bool:
    """Whether some rule is a *:* rwm, which makes the others moot."""
    return any(r.is_all for r in rules)


# --- cgroup v1 ---------------------------------------------------------------

def v1_line(rule: Rule) -> str:
    """A rule as devices.allow reads it: 'c 1:3 rwm', 'c *:* m', 'a *:* rwm'."""
    access = "".join(a for a in ACCESS if a in rule.access)
    return f"{rule.type} {_num(rule.major)}:{_num(rule.minor)} {access}"


def v1_lines(rules: list[Rule]) -> list[str]:
    """The lines v1_apply writes to devices.allow, in order."""
    return [v1_line(r) for r in rules]


def _merged(rules: list[Rule]) -> set[tuple]:
    """The exception list the kernel keeps: one entry per (type, major, minor) with the
    accesses of every line for it OR-ed (dev_exception_add merges, it does not append)."""
    if allows_all(rules):
        return {("a", None, None, frozenset(ACCESS))}
    merged: dict[tuple, frozenset[str]] = {}
    for r in rules:
        key = (r.type, r.major, r.minor)
        merged[key] = merged.get(key, frozenset()) | r.access_set()
    return {(*key, access) for key, access in merged.items()}


def v1_matches(cgroup_dir: str, rules: list[Rule]) -> bool:
    """Whether devices.list shows exactly these rules (as sets: the kernel merges lines)."""
    text = read_value(os.path.join(cgroup_dir, "devices.list"))
    if text is None:
        return False
    have = _merged([parse_line(line) for line in text.splitlines() if line.strip()])
    return have == _merged(rules)


def v1_apply(cgroup_dir: str, rules: list[Rule]) -> None:
    """Set the cgroup's allow list, as runc does: "a" to devices.deny (default deny, no
    exceptions), then each rule to devices.allow; allow-all is "a" to devices.allow.

    Nothing is written when devices.list already matches: the deny-then-allow sequence
    denies every device for a moment to processes already in the cgroup."""
    if v1_matches(cgroup_dir, rules):
        return
    if allows_all(rules):
        # Only a cgroup whose parent allows all may; it also drops every exception.
        write_value(os.path.join(cgroup_dir, "devices.allow"), "a")
        return
    write_value(os.path.join(cgroup_dir, "devices.deny"), "a")
    for line in v1_lines(rules):
        write_value(os.path.join(cgroup_dir, "devices.allow"), line)


# --- cgroup v2: attaching --------------------------------------------------------

LICENSE = "MIT"  # only programs calling GPL-only helpers need a GPL-compatible one; this calls none
PROGRAM_NAME = "diy_devices"  # bpftool prog shows it (prog_name: 15 characters at most)


def _open_dir(cgroup_dir: str) -> int:
    """The fd BPF_PROG_ATTACH and BPF_PROG_QUERY take for a cgroup: its directory, opened."""
    return os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def v2_attach(cgroup_dir: str, rules: list[Rule]) -> None:
    """Load the program and attach it to the cgroup (BPF_PROG_ATTACH, BPF_CGROUP_DEVICE).

    Flags 0 ("NONE" in bpf.h): one program per cgroup, so attaching again replaces it in one
    step (apply stays idempotent and v2_attached stays 1), and no cgroup below may attach
    another. BPF_F_ALLOW_MULTI (runc, crun, systemd) would let a nested manager add its
    own, but every attach would then add a program and the old ones would need detaching.
    An ancestor's ALLOW_MULTI programs still run as well: the most restrictive one wins.
    The attachment holds the program, so our fd is closed; rmdir releases both."""
    from steps.runtime.device_program import v2_program  # pure v2 hosts only

    program = v2_program(rules)
    try:
        directory = _open_dir(cgroup_dir)
        try:
            prog = linux.bpf_prog_load(linux.BPF_PROG_TYPE_CGROUP_DEVICE, program, LICENSE, PROGRAM_NAME)
            try:
                linux.bpf_prog_attach(prog, directory, linux.BPF_CGROUP_DEVICE, 0)
            finally:
                os.close(prog)
        finally:
            os.close(directory)
    except OSError as e:
        raise OSError(e.errno, f"cannot attach the device filter to {cgroup_dir}: {e.strerror or e}") from None


def v2_attached(cgroup_dir: str) -> int:
    """How many device programs are attached to the cgroup itself (BPF_PROG_QUERY)."""
    try:
        directory = _open_dir(cgroup_dir)
        try:
            return linux.bpf_prog_query(directory, linux.BPF_CGROUP_DEVICE)
        finally:
            os.close(directory)
    except OSError as e:
        raise OSError(e.errno, f"cannot query the device filters of {cgroup_dir}: {e.strerror or e}") from None
