"""system doctor: print what steps/doctor/ finds (what, where, why; one line each, or JSON),
undo it with --fix, and exit 1 while anything is left, so scripts can use it."""
from __future__ import annotations

import json
import sys

from steps import config


def line(f) -> str:
    fix = f"; --fix: {f.fix}" if f.fix else "; --fix leaves it (see why)"
    return f"{f.what} {f.where}: {f.why}{fix}"


def doctor(fix: bool = False, as_json: bool = False) -> int:
    """Report every object of this instance without a record, and records whose objects are gone or
    half there; with fix, undo each through its owning step's undo and check again."""
    from steps.cli import face as cli
    from steps.doctor.fix import fix as undo
    from steps.doctor.scan import scan
    from steps.report import Reporter

    instance = config.load()
    found = scan(instance)
    outcomes, left = [], found
    if fix and found:
        reporter = Reporter(stream=sys.stderr, as_json=as_json or cli.wants_json(), quiet=cli.quiet())
        outcomes = undo(instance, reporter)
        left = scan(instance)
    if as_json or cli.wants_json():
        print(json.dumps({"found": [f._asdict() for f in found], "fixed": [o._asdict() for o in outcomes],
                          "left": [f._asdict() for f in left] if fix else None}, indent=2))
        return 1 if left else 0
    print_text(found, outcomes, left, fix)
    return 1 if left else 0


def print_text(found: list, outcomes: list, left: list, fix: bool) -> None:
    if not found:
        print("nothing found: every object of this instance has its record")
        return
    for f in found:
        print(f"found: {line(f)}")
    if not fix:
        print(f"{len(found)} finding(s); `system doctor --fix` undoes them")
        return
    for o in outcomes:
        print(f"fixed: {o.target}: {o.done}" if o.done else f"not fixed: {o.target}: {o.error}")
    for f in left:
        print(f"left: {line(f)}")
    print(f"{len(left)} finding(s) left" if left else "clean: nothing of this instance is left without its record")
