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

import os
import resource

from steps import linux

RLIMITS = {"RLIMIT_NOFILE": resource.RLIMIT_NOFILE}


def isolate_session(rlimits: dict[str, list[int]]) -> None:
    """A fresh anonymous session keyring (keys added inside never reach the host's), and
    explicit rlimits rather than whatever the caller had."""
    linux.join_session_keyring()
    for name, (soft, hard) in rlimits.items():
        set_rlimit(RLIMITS[name], soft, hard)


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
    keep, user = plan["caps"], plan.get("user")
    for cap in range(plan["last_cap"] + 1):
        if not keep >> cap & 1:
            linux.drop_bounding(cap)
    if user is not None:
        os.setgroups(user["groups"])
        os.setgid(user["gid"])
        os.setuid(user["uid"])  # from root to another uid: permitted and effective are cleared
    root = user is None or user["uid"] == 0
    linux.capset(keep if root else 0, keep if root else 0, 0)
    linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)


def just_before_exec(plan: dict) -> None:
    if plan["no_new_privileges"]:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
        if plan["seccomp"]:
            linux.seccomp_load(plan["seccomp"])
