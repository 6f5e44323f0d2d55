"""diy-docker: containers as a chain of checkable, appliable, undoable steps.

The step contract (see README, "Design"):

    check()  facts only, never changes anything; says what apply would change
    apply()  converges to applied from any partial state
    undo()   converges to absent from any state; twice in a row is fine
"""
from __future__ import annotations

from typing import NamedTuple

APPLIED = "applied"
ABSENT = "absent"
PARTIAL = "partial"
NOTHING = "nothing"  # nothing wanted and nothing present: both applied and absent

# Exit codes, as Docker's CLI uses them.
EXIT_DIY_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


class DiyError(Exception):
    """A failure reported to the user as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_DIY_FAILED):
        super().__init__(message)
        self.code = code


class BadInput(DiyError):
    """An argument or file the user controls is invalid; nothing was touched."""


class StepFailed(DiyError):
    """A step could not apply, undo or verify."""


class Change(NamedTuple):
    """One difference between the system and the desired state."""

    what: str
    before: str = ""
    after: str = ""

    def __str__(self) -> str:
        if self.before or self.after:
            return f"{self.what}: {self.before or '-'} -> {self.after or '-'}"
        return self.what


class Check(NamedTuple):
    """What check() found: the state and what apply would change. (NamedTuples, not dataclasses:
    importing dataclasses costs every command ~8 ms, ps and images included.)"""

    state: str
    changes: list[Change] = []  # noqa: RUF012 - never mutated: every check builds its own list
    detail: str = ""

    @property
    def applied(self) -> bool:
        return self.state in (APPLIED, NOTHING) and not self.changes

    @property
    def absent(self) -> bool:
        return self.state in (ABSENT, NOTHING)

    def summary(self) -> str:
        if self.changes:
            return "; ".join(str(c) for c in self.changes)
        return self.detail or self.state


def applied(detail: str = "") -> Check:
    return Check(APPLIED, [], detail)


def absent(changes: list[Change], detail: str = "") -> Check:
    return Check(ABSENT, changes, detail)


def nothing(detail: str) -> Check:
    return Check(NOTHING, [], detail)


def partial(changes: list[Change], detail: str = "") -> Check:
    return Check(PARTIAL, changes, detail)


class Step:
    """One stage of a container: checked, applied and undone from facts."""

    name = "step"
    undoable = True  # False: undo is a no-op by design (images outlive containers)

    def __init__(self, ctx):
        self.ctx = ctx

    def check(self) -> Check:
        raise NotImplementedError

    def apply(self) -> None:
        raise NotImplementedError

    def undo(self) -> None:
        raise NotImplementedError


STAGES = {"image": ("steps.image", "ImageStep"), "layers": ("steps.layers", "LayersStep"),
          "volumes": ("steps.volumes", "VolumesStep"), "cgroup": ("steps.cgroup", "CgroupStep"),
          "veth": ("steps.veth", "VethStep"), "nat": ("steps.nat", "NatStep"),
          "firewall": ("steps.firewall", "FirewallStep"), "launch": ("steps.launch", "LaunchStep"),
          "teardown": ("steps.teardown", "TeardownStep")}


def stage_class(name: str) -> type[Step]:
    """A stage's class, its module imported on first use (a --network none run never imports
    the networking stages' modules)."""
    import importlib

    module, cls = STAGES[name]
    return getattr(importlib.import_module(module), cls)


def stage_classes() -> dict[str, type[Step]]:
    """Every stage's class (all their modules imported)."""
    return {name: stage_class(name) for name in STAGES}
