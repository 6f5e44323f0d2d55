"""Restart policies (Docker's --restart): their meaning, the back-off, and the monitor's loop.

A container with a policy keeps its monitor after the init exits: the layers, volumes,
cgroup, veth and nat stay applied and only the init is launched again, so a restart is cheap
and keeps the container's address and the changes it made. Docker's timing
(moby daemon/restartmanager): 100 ms before the first restart, doubled each time, at most a
minute, back to 100 ms after a run of at least 10 s. A user's stop, rm -f or teardown marks
record["last"]["stopped_by_user"] first; the monitor reads it before every relaunch and
during the back-off, so it never waits out a minute.
"""
from __future__ import annotations

import time

from steps import BadInput, StepFailed
from steps.state import container_lock, journal, load_record, load_runtime, now_iso, update_record

POLICIES = ("no", "on-failure", "always", "unless-stopped")
HINT = "use no, on-failure[:N], always or unless-stopped"
FIRST_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0  # seconds of running that reset the back-off
POLL = 0.05         # how often a back-off looks for a user's stop


def parse(text: str | None, rm: bool = False) -> dict | None:
    """--restart as the spec's {"name", "max_retries"}; None for "no" (no policy).
    max_retries 0 means no limit, as Docker's on-failure without :N."""
    if text in (None, "", "no"):
        return None
    name, colon, count = str(text).partition(":")
    if name not in POLICIES or name == "no":
        raise BadInput(f"bad restart {text!r}: {HINT}")
    if colon and name != "on-failure":
        raise BadInput(f"bad restart {text!r}: only on-failure takes a retry count, e.g. on-failure:3")
    if colon and not (count.isdigit() and int(count) < 2**31):
        raise BadInput(f"bad restart {text!r}: the retry count is a whole number, e.g. on-failure:3")
    if rm:
        raise BadInput(f"bad restart {text!r}: Conflicting options: --restart and --rm "
                       "(a container removed when it exits cannot restart), e.g. drop --rm")
    return {"name": name, "max_retries": int(count) if colon else 0}


def should_restart(policy: dict | None, code: int, restarts: int, stopped_by_user: bool) -> bool:
    """Whether a container that just exited with code is launched again (Docker's ShouldRestart)."""
    if not policy or stopped_by_user:
        return False
    if policy["name"] in ("always", "unless-stopped"):
        return True
    if policy["name"] == "on-failure":
        limit = policy.get("max_retries") or 0
        return code != 0 and (limit == 0 or restarts < limit)
    return False


def at_boot(record: dict) -> bool:
    """Whether `boot` starts this container, as Docker's daemon does when it starts (its
    documented behaviour): always; unless-stopped unless the user stopped it; on-failure and no
    never. A container that never started stays created."""
    policy = record.get("restart") or {}
    last = record.get("last") or {}
    if not last.get("started_at"):
        return False
    if policy.get("name") == "always":
        return True
    return policy.get("name") == "unless-stopped" and not last.get("stopped_by_user")


class Backoff:
    """The delays before successive restarts."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay  # a detached monitor carries it across its execs (steps/runtime/monitor.py)

    def next(self, ran: float) -> float:
        """The delay before the next restart, after a run of `ran` seconds."""
        if ran >= RESET_AFTER:
            self.delay = 0.0
        self.delay = FIRST_DELAY if self.delay == 0 else min(self.delay * 2, MAX_DELAY)
        return self.delay


# --- the record's side: a user's stop ----------------------------------------

def mark_stopped(names) -> None:
    """Before a user's stop, rm -f or teardown signals anything: no restart after this exit.
    Only while the container is up (Docker marks a running or restarting container)."""
    from steps.facts import boot_id, process_alive

    rt = load_runtime(names)
    if rt is None or rt.get("boot_id") != boot_id():
        return
    if not (process_alive(rt.get("monitor_pid"), rt.get("monitor_start"))
            or process_alive(rt.get("init_pid"), rt.get("init_start"))):
        return
    with container_lock(names):
        update_record(names, stopped_by_user=True)


def stopped(names) -> bool:
    """The user stopped or removed the container: the restarting ends."""
    record = load_record(names)
    return record is None or bool((record.get("last") or {}).get("stopped_by_user"))


def pause(names, delay: float) -> bool:
    """Sleep the back-off; False as soon as the user stops the container."""
    deadline = time.monotonic() + delay
    while not stopped(names):
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(POLL, left))
    return False


# --- the monitor's side --------------------------------------------------------

def monitor_lock(names):
    lock = container_lock(names)
    lock.timeout = 3600.0  # a `stop --time N` may hold it for a while: wait, never give up
    return lock


def decide(monitor, code: int) -> bool:
    """After an exit, under the container's lock: whether the policy restarts it. When it does,
    this run's exit is recorded now and the container shows as restarting."""
    names = monitor.ctx.names
    if not monitor.ctx.spec.get("restart"):
        return False  # no policy: no lock taken, the clean-up follows as always
    with monitor_lock(names):
        record = load_record(names)
        if record is None or not monitor.mine():
            return False
        last = record.get("last") or {}
        if not should_restart(record.get("restart"), code, last.get("restart_count") or 0,
                              bool(last.get("stopped_by_user"))):
            return False
        oom = monitor.safe_oom_kills(oom_counter())
        update_record(names, finished_at=now_iso(), exit_code=code, oom_killed=oom, restarting=True)
        journal(names, {"pipeline": "restart", "step": "launch", "action": "restart", "result": "exited",
                        "detail": f"exit code {code}" + (", OOM-killed" if oom else "")})
        return True


def oom_counter():
    from steps.cgroup import oom_kills

    return oom_kills


def relaunch(monitor) -> bool:
    """Launch the init again, under the lock, unless the user stopped it meanwhile. A failed
    launch raises StepFailed with its exit code; the container stays the monitor's."""
    names = monitor.ctx.names
    with monitor_lock(names):
        record = load_record(names)
        if stopped(names) or not monitor.mine():
            return False
        count = ((record.get("last") or {}).get("restart_count") or 0) + 1
        update_record(names, restart_count=count)
        try:
            monitor.oom_base = oom_counter()(names.cgroup_path)  # the cgroup outlives the runs
        except OSError:
            monitor.oom_base = 0
        try:
            monitor.spawn()
        except StepFailed:
            if load_runtime(names) is None:
                monitor.record_runtime()  # still ours (up, not running): the clean-up is ours
            raise
        finally:
            monitor.began = time.monotonic()
        update_record(names, restarting=False)
    return True


def supervise(monitor, code: int) -> int:
    """The monitor's loop after an exit: launch the init again while the policy says so.
    Returns the last run's exit code, for the clean-up (the stop pipeline)."""
    if not monitor.ctx.spec.get("restart"):
        return code
    if getattr(monitor, "backoff", None) is None:
        monitor.backoff = Backoff()
    backoff = monitor.backoff
    while decide(monitor, code):
        if not pause(monitor.ctx.names, backoff.next(time.monotonic() - monitor.began)):
            return code
        try:
            if not relaunch(monitor):
                return code
        except StepFailed as e:
            code = e.code  # as Docker: a launch that fails counts as a failed run
            journal(monitor.ctx.names, {"pipeline": "restart", "step": "launch", "result": "failed",
                                        "detail": str(e)})
            continue
        code = monitor.wait()  # a detached monitor execs the shim here; its exit comes back to resume
    return code
