"""The engine: loads the YAML pipelines and runs check -> apply -> verify, with rollback."""
from __future__ import annotations

import os
import signal
import time

from steps import DiyError, Step, StepFailed, faults, stage_class
from steps.config import Instance
from steps.names import Names
from steps.report import CHANGED, FAILED, OK, PLANNED, SKIPPED, Reporter, Result
from steps.state import journal

_pipelines: dict | None = None


class Context:
    """What the steps of one container need: the instance, its names, its spec; attach: this
    (foreground) process is the monitor; monitor: set by launch when this process is the monitor."""

    def __init__(self, instance: Instance, names: Names, spec: dict | None = None, attach: bool = True,
                 monitor: object = None):
        self.instance, self.names, self.spec = instance, names, {} if spec is None else spec
        self.attach, self.monitor = attach, monitor


def pipelines() -> dict[str, list[tuple[str, str]]]:
    global _pipelines
    if _pipelines is None:
        with open(os.path.join(os.path.dirname(__file__), "pipelines.yaml")) as f:
            _pipelines = parse_pipelines(f.read())
    return _pipelines


def parse_pipelines(text: str) -> dict[str, list[tuple[str, str]]]:
    """pipelines.yaml, a YAML subset read without yaml (its import costs every command ~13 ms):
    `name:` lines, each followed by `  - ACTION TARGET` lines; `#` starts a comment."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line.startswith(" ") and line.endswith(":"):
            current = out.setdefault(line[:-1].strip(), [])
        elif current is not None and line.lstrip().startswith("- ") and len(line.split()) == 3:
            _, action, target = line.split()
            current.append((action, target))
        else:
            raise StepFailed(f"pipelines.yaml line {number}: expected `name:` or `  - ACTION TARGET`")
    return out


def expand(name: str) -> list[tuple[str, str]]:
    """The (action, stage) list of a pipeline, with "include" entries inlined."""
    out = []
    for action, target in pipelines()[name]:
        out.extend(expand(target) if action == "include" else [(action, target)])
    return out


class Engine:
    def __init__(self, ctx: Context, reporter: Reporter, check_only: bool = False,
                 rollback: bool = True, pipeline: str = ""):
        self.ctx, self.reporter = ctx, reporter
        self.check_only, self.rollback = check_only, rollback
        self.pipeline = pipeline

    def step(self, stage: str) -> Step:
        return stage_class(stage)(self.ctx)

    def run(self, name: str) -> None:
        """Run a pipeline. Undos are best effort: all run, the first error is raised at the
        end. An apply runs only when nothing failed before it; a failed apply rolls back
        the applies this run made (and itself), in reverse."""
        self.pipeline = self.pipeline or name
        applied: list[Step] = []
        errors: list[DiyError] = []
        for action, stage in expand(name):
            step = self.step(stage)
            if action == "undo":
                try:
                    self.one(step, action)
                except Exception as e:  # keep going: undo as much as possible
                    errors.append(as_diy_error(e, stage, action))
                continue
            if errors:
                self.report(step, action, SKIPPED, "an undo before it failed", time.monotonic())
                continue
            try:
                if self.one(step, action):
                    applied.append(step)
            except BaseException as e:  # KeyboardInterrupt too: roll back, then report
                if self.rollback and not self.check_only:
                    self.roll_back(applied + [step])
                raise as_diy_error(e, step.name, action) from None
        if errors:
            raise errors[0]

    def roll_back(self, steps: list[Step]) -> None:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave half
        try:
            for step in reversed(steps):
                try:
                    self.one(step, "undo")
                except Exception:
                    pass  # reported as failed by one(); keep undoing the rest
        finally:
            signal.signal(signal.SIGINT, previous)

    def one(self, step: Step, action: str) -> bool:
        """Check, act if needed, verify. Returns True when the system was changed."""
        start = time.monotonic()
        where = f"{step.name}.{action}"
        if action == "undo" and not step.undoable:
            self.report(step, action, SKIPPED, f"{step.name} outlives containers: nothing to undo", start)
            return False
        try:
            faults.point(f"{where}.before")
            before = step.check()
            done = before.applied if action == "apply" else before.absent
            if done:
                self.report(step, action, OK, before.detail or before.state, start)
                return False
            what = before.summary() if action == "apply" else f"{before.state}: {before.summary()}"
            if self.check_only:
                self.report(step, action, PLANNED, what, start)
                return False
            (step.apply if action == "apply" else step.undo)()
            faults.point(f"{where}.after")
            after = step.check()
            if not (after.applied if action == "apply" else after.absent):
                raise StepFailed(f"{step.name} did not verify after {action}: {after.summary()}")
        except BaseException as e:
            self.report(step, action, FAILED, one_line(e), start)
            raise
        self.report(step, action, CHANGED, what, start)
        return True

    def report(self, step: Step, action: str, status: str, detail: str, start: float) -> None:
        ms = int((time.monotonic() - start) * 1000)
        result = Result(self.ctx.names.container, self.pipeline, step.name, action, status, detail, ms)
        self.reporter.step(result)
        if not self.check_only:
            journal(self.ctx.names, {"pipeline": self.pipeline, "step": step.name, "action": action,
                                     "result": status, "detail": detail, "ms": ms})


def one_line(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    from steps.exhaustion import exhausted, what_ran_out

    if exhausted(e):
        return what_ran_out(e, None)
    text = str(e) or type(e).__name__
    return text.splitlines()[0] if text else type(e).__name__


def as_diy_error(e: BaseException, stage: str, action: str = "apply") -> DiyError:
    if isinstance(e, DiyError):
        return e
    if isinstance(e, KeyboardInterrupt):
        return DiyError("interrupted; the steps this run applied were rolled back", 130)
    from steps.exhaustion import exhausted, explain

    if exhausted(e):
        return explain(e, f"{'undoing' if action == 'undo' else 'applying'} {stage}")
    return StepFailed(f"{stage} failed: {one_line(e)}")
