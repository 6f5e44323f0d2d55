"""The VM tier: tests/test_cgroup_v2.py run inside a pure cgroup v2 kernel booted by virtme-ng.

One VM boot runs them all (minutes under emulation: `-m 'not slow'` leaves it out). It skips,
naming what is missing, where qemu, a /boot/vmlinuz-* or vng is not installed (see tests/vm.py).
"""
from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests import vm

V2_FILE = "tests/test_cgroup_v2.py"
BUDGET = 600  # seconds: the whole VM run, boot included
OUTCOME = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def v2_test_ids() -> list[str]:
    """The v2 tests as pytest collects them here (skipped or not, they are collected)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "v2", V2_FILE],
                         cwd=vm.REPO, capture_output=True, text=True, timeout=120).stdout
    return [line for line in out.splitlines() if line.startswith(V2_FILE + "::")]


def outcome_counts(output: str) -> dict[str, int]:
    """pytest's last summary line ('6 passed, 1 skipped in 80.1s') as counts."""
    summaries = [line for line in output.splitlines() if OUTCOME.search(line) and re.search(r" in [\d.]+s", line)]
    if not summaries:
        return {}
    return {kind.rstrip("s") if kind.startswith("error") else kind: int(n)
            for n, kind in OUTCOME.findall(summaries[-1])}


@pytest.mark.slow
def test_cgroup_v2_tests_pass_in_a_vm():
    reason = vm.missing()
    if reason:
        pytest.skip(f"the cgroup v2 VM tier cannot run here: {reason}")
    expected = v2_test_ids()
    assert expected, f"no v2 tests collected from {V2_FILE}"
    started = time.monotonic()
    code, output = vm.run_pytest(["-q", "-rfEs", "-p", "no:cacheprovider", "-m", "v2", V2_FILE],
                                 timeout=BUDGET - 60)
    elapsed = time.monotonic() - started
    print(output)  # pytest shows it with a failure
    counts = outcome_counts(output)
    assert code == 0, f"the v2 tests failed in the VM (exit {code}, {counts}):\n{output[-20000:]}"
    assert counts.get("passed") == len(expected), f"expected {len(expected)} passed, got {counts}:\n{output}"
    assert elapsed < BUDGET, f"the VM tier took {elapsed:.0f} s (budget {BUDGET} s)"
    print(f"VM tier: {len(expected)} v2 tests passed in {elapsed:.0f} s")
