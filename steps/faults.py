"""Fault injection for the fault tests: DIY_DOCKER_FAULT=POINT:ACTION[,POINT:ACTION].

POINT is "<step>.<phase>.<where>" (e.g. "layers.apply.mid", "cgroup.undo.before");
ACTION is "kill" (SIGKILL this process), "fail" (raise a step failure) or a resource
running out, raised as the OSError the kernel gives: "enospc", "edquot", "emfile",
"enfile", "enomem", "eagain" (as fork() fails at a process limit).
Unset in normal use: then point() is one dictionary lookup.
"""
from __future__ import annotations

import errno
import os
import signal

from steps import StepFailed

RUNNING_OUT = {"enospc": errno.ENOSPC, "edquot": errno.EDQUOT, "emfile": errno.EMFILE, "enfile": errno.ENFILE,
               "enomem": errno.ENOMEM, "eagain": errno.EAGAIN}

_plan: dict[str, str] | None = None


def _load() -> dict[str, str]:
    global _plan
    if _plan is None:
        _plan = {}
        for item in filter(None, os.environ.get("DIY_DOCKER_FAULT", "").split(",")):
            where, _, action = item.rpartition(":")
            _plan[where] = action
    return _plan


def point(where: str) -> None:
    action = _load().get(where)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "fail":
        raise StepFailed(f"injected fault at {where}")
    elif action in RUNNING_OUT:
        code = RUNNING_OUT[action]
        raise OSError(code, os.strerror(code))


def active() -> bool:
    """Whether any fault is planned (to keep test-only work off the normal path)."""
    return bool(_load())
