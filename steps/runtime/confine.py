"""What the init gives up before exec: keyring, rlimits, capabilities, user, seccomp.

The order matters (README "Confinement"):
- Without no_new_privs, installing a seccomp filter needs CAP_SYS_ADMIN (seccomp(2)),
  so the filter goes in while the init still has every capability, before they drop;
  the profile allows capset, prctl, setgroups, setgid and setuid that follow.
- With no_new_privs, the filter goes in last, just before exec, as runc does.
- Capabilities (capabilities(7)): the bounding set first (dropping needs CAP_SETPCAP),
  then the user (setgroups/setgid/setuid need CAP_SETGID/SETUID, still effective),
  then permitted/effective/inheritable with capset, then the ambient set cleared.
  A non-root user keeps the bounding set only: its effective set is empty, and a
  setuid-root binary regains what the bounding set allows, as in Docker.
"""
from __future__ import annotations

import errno
import os
import resource

from steps import linux

RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}


def isolate_session(rlimits: dict[str, list[int]]) -> None:
    """A fresh anonymous session keyring (keys added inside never reach the host's), and
    explicit rlimits rather than whatever the caller had."""
    linux.join_session_keyring()
    for name, (soft, hard) in rlimits.items():
        set_rlimit(RLIMITS[name], soft, hard)
    os.umask(0o022)  # runc's default, not whatever the caller's shell had


def set_rlimit(which: int, soft: int, hard: int) -> None:
    """Raising a hard limit needs CAP_SYS_RESOURCE (setrlimit(2)); where the caller lacks it
    (a confined host), the caller's hard limit stands and the soft limit fits under it."""
    try:
        resource.setrlimit(which, (soft, hard))
    except ValueError:
        current = resource.getrlimit(which)[1]
        limit = hard if current == resource.RLIM_INFINITY else min(hard, current)
        resource.setrlimit(which, (min(soft, limit), limit))


def before_privileges_drop(plan: dict) -> None:
    if plan["seccomp"] and not plan["no_new_privileges"]:
        linux.seccomp_load(plan["seccomp"])


def drop_privileges(plan: dict) -> None:
    """The user is always set, root included: the caller's supplementary groups never pass."""
    keep, user = plan["caps"], plan["user"]
    for cap in range(plan["last_cap"] + 1):
        if not keep >> cap & 1:
            linux.drop_bounding(cap)
    os.setgroups(user["groups"])
    os.setgid(user["gid"])
    os.setuid(user["uid"])  # from root to another uid: permitted and effective are cleared
    root = user["uid"] == 0
    linux.capset(keep if root else 0, keep if root else 0, 0)
    linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
    verify_dropped(keep if root else 0, keep, user)


def verify_dropped(effective: int, bounding: int, user: dict) -> None:
    """Ask the kernel what we are now (proc(5) /proc/self/status): a seccomp profile can make
    setuid, setgroups, capset or prctl return 0 without doing anything (SCMP_ACT_ERRNO with
    errnoRet 0), and then the command would run as root with every capability. Fail closed."""
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    ids = {str(user["uid"])}, {str(user["gid"])}
    problems = [f"{key} is {status[key].split()}" for key, want in (("Uid", ids[0]), ("Gid", ids[1]))
                if set(status[key].split()) != want]
    if sorted(int(g) for g in status["Groups"].split()) != sorted(set(user["groups"])):
        problems.append(f"Groups are {status['Groups'].split()}")
    masks = {key: int(status[key], 16) for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
    limits = {"CapInh": 0, "CapPrm": effective, "CapEff": effective, "CapBnd": bounding, "CapAmb": 0}
    problems += [f"{key} is {masks[key]:016x}" for key, allowed in limits.items() if masks[key] & ~allowed]
    if problems:
        raise OSError(errno.EPERM, "cannot drop privileges: " + ", ".join(problems) +
                      " (does the seccomp profile fake success for setuid, setgroups or capset?)")


def just_before_exec(plan: dict) -> None:
    if plan["no_new_privileges"]:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
        if plan["seccomp"]:
            linux.seccomp_load(plan["seccomp"])
