"""One health-check probe, a short-lived process of its own: the monitor (the detached shim or the
foreground one, shim.Prober) spawns `python -c health.PROBE ROOT name=NAME` at each interval.

It enters the container as `exec` does (steps/runtime/exec.py: the container's namespaces, cgroup,
profile, user, env and workdir), runs the test (CMD: the words; CMD-SHELL: /bin/sh -c), stdout and
stderr together into a memfd, kills the command past the timeout (exit code -1 and Docker's
message), then judges the result and records it (steps/runtime/health.py) - unless the init it
judged is gone meanwhile. Apart from health.py, so that what spec, launch and the monitor import
never pulls in exec (nor exec this back).
"""
from __future__ import annotations

import os
import time

from steps.runtime.health import LOG_ENTRIES, OUTPUT_MAX, current, go_duration, judge, path, stamp


def main(argv: list[str]) -> None:
    """`python -c PROBE ROOT name=NAME`: run the check once and record it; never raises."""
    import sys

    try:
        opts = dict(word.split("=", 1) for word in argv)
        probe_once(opts["name"])
    except BaseException as e:  # noqa: BLE001 - the monitor's log says why; the next probe tries again
        print(f"health check: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        os._exit(1)
    os._exit(0)


def probe_once(name: str) -> None:
    from steps import config
    from steps.names import Names
    from steps.state import read_json, write_json

    names = Names(config.load(), name)
    health = current(names)
    if health is None:
        return  # it stopped (or was restarted) meanwhile: nothing to judge
    check = health["check"]
    began, start = time.time(), stamp()
    code, output = run_check(names.container, check["test"], check["timeout"])
    entry = {"Start": start, "End": stamp(), "ExitCode": code, "Output": output}
    now = read_json(path(names))
    if not now or now.get("init") != health.get("init") or current(names) is None:
        return  # the init this probe judged is gone: its result is nobody's
    now = judge(now, code, began)
    now["Log"] = (now.get("Log") or [])[-(LOG_ENTRIES - 1):] + [entry]
    write_json(path(names), now)


def run_check(name: str, test: list[str], timeout: float) -> tuple[int, str]:
    """(exit code, output) of the test run inside the container as `exec` runs a command, its
    stdout and stderr together; killed past the timeout (-1, Docker's message)."""
    import signal

    from steps import StepFailed
    from steps.runtime.exec import ExecOptions, Runner, exec_plan

    argv = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else list(test[1:])
    out = os.memfd_create("health-output", os.MFD_CLOEXEC)
    saved = [os.dup(1), os.dup(2)]
    runner, expired = None, []

    def expire(_signo, _frame):
        expired.append(True)
        if runner is not None and runner.pid:
            os.kill(runner.pid, signal.SIGKILL)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        os.dup2(out, 1)  # the relay (stdio.py) writes the command's output to our 1 and 2
        os.dup2(out, 2)
        runner = Runner(exec_plan(ExecOptions(name=name, command=argv)), False)
        pid = runner.start()
        if expired:
            os.kill(pid, signal.SIGKILL)
        code = runner.wait()
    except StepFailed as e:
        code, message = e.code, str(e)
    else:
        message = None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        for fd, target in zip(saved, (1, 2)):
            os.dup2(fd, target)
            os.close(fd)
    if expired:
        os.close(out)
        return -1, f"Health check exceeded timeout ({go_duration(timeout)})"
    output = os.pread(out, OUTPUT_MAX, 0).decode(errors="replace")
    os.close(out)
    return code, message if message is not None else output
