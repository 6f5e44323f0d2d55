"""Ansible-like reporting: one line per step, a recap, --json, colour only on a TTY."""
from __future__ import annotations

import json
import os
import sys
from typing import NamedTuple

OK, CHANGED, FAILED, SKIPPED, PLANNED = "ok", "changed", "failed", "skipped", "would change"
_COLOURS = {OK: "32", CHANGED: "33", FAILED: "31", SKIPPED: "36", PLANNED: "33"}


class Result(NamedTuple):
    container: str
    pipeline: str
    step: str
    action: str
    status: str
    detail: str
    ms: int


class Reporter:
    """quiet (Docker's face without -v): nothing is printed unless a step fails; then the failed
    step, what was rolled back and the recap go to stderr."""

    def __init__(self, stream=None, as_json: bool = False, color: bool | None = None, quiet: bool = False):
        self.quiet = quiet
        self.failing = False
        if quiet:
            stream = sys.stderr
        self.stream = stream or sys.stdout
        self.as_json = as_json
        if color is None:
            color = self.stream.isatty() and not os.environ.get("NO_COLOR")
        self.color = color
        self.results: list[Result] = []

    def _paint(self, status: str, text: str) -> str:
        return f"\033[{_COLOURS[status]}m{text}\033[0m" if self.color else text

    def step(self, result: Result) -> None:
        self.results.append(result)
        self.failing |= result.status == FAILED
        if self.quiet and not self.failing:
            return
        if self.as_json:
            self._emit({"event": "step", **result._asdict()})
            return
        label = f"{result.status}:"
        verb = "" if result.action == "apply" else f"{result.action} "
        line = (f"{self._paint(result.status, f'{label:<14}')}[{result.container}] "
                f"{verb}{result.step} => {result.detail} ({result.ms} ms)")
        self._write(line)

    def counts(self) -> dict[str, int]:
        counts = {OK: 0, CHANGED: 0, FAILED: 0, SKIPPED: 0}
        for r in self.results:
            key = CHANGED if r.status == PLANNED else r.status
            counts[key] += 1
        return counts

    def recap(self, container: str, pipeline: str) -> None:
        if self.quiet and not self.failing:
            return
        counts = self.counts()
        if self.as_json:
            self._emit({"event": "recap", "container": container, "pipeline": pipeline, **counts})
            return
        parts = " ".join(f"{k}={v}" for k, v in counts.items())
        self._write(f"RECAP [{container}] {pipeline}: {parts}")

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self.as_json:
            self._emit({"event": "message", "text": text})
        else:
            self._write(text)

    def _emit(self, obj: dict) -> None:
        self._write(json.dumps(obj, sort_keys=True))

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
