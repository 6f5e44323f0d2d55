"""A container as the lifecycle commands find it: by name or ID, under its lock once no monitor
is finishing, running or not, restarting or not; and how their reports are printed."""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import NamedTuple

from steps import BadInput, DiyError, config
from steps.names import Names, generate_name
from steps.pipeline import Context
from steps.report import Reporter
from steps.state import container_lock, find_container, load_record


class Output(NamedTuple):
    as_json: bool = False
    check: bool = False
    rollback: bool = True

    def reporter(self, attached: bool) -> Reporter:
        """Reports go to stderr while the container owns stdout; Docker's face is quiet."""
        from steps.cli import face as cli

        return Reporter(stream=sys.stderr if attached else sys.stdout, as_json=self.as_json or cli.wants_json(),
                        quiet=cli.quiet())


def names_for(ref: str) -> Names:
    """An existing container's names, from its name, ID or unique ID prefix."""
    return find_container(config.load(), ref)


def parse_timeout(text) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise BadInput(f"bad --time {text!r}: expected whole seconds, e.g. 10") from None
    if value < 0:
        raise BadInput(f"bad --time {text!r}: must be 0 or more seconds")
    return value


def unused_name() -> str:
    instance = config.load()
    while load_record(Names(instance, name := generate_name())) is not None:
        pass
    return name


def existing(names: Names) -> dict:
    record = load_record(names)
    if record is None:
        raise DiyError(f"no such container: {names.container} (see invoke ps)")
    return record


def facts(names: Names) -> tuple[dict | None, bool, bool]:
    from steps.launch import runtime_facts

    return runtime_facts(names)


@contextmanager
def settled(names: Names, check_only: bool = False):
    """The container's lock, taken once no monitor is finishing (it needs the lock to clean
    up after its init: wait for it outside). Check mode takes no lock and makes no file.
    When the container is gone on release, its lock file goes too."""
    if check_only:
        yield None
        return
    deadline = time.monotonic() + names.instance.lock_timeout
    while True:
        lock = container_lock(names).acquire()
        rt, init_alive, monitor_alive = facts(names)
        if not (monitor_alive and not init_alive) or rt.get("monitor_pid") == os.getpid() \
                or restarting(names):  # a monitor in its back-off is not cleaning up: do not wait for it
            break
        lock.release()
        if time.monotonic() > deadline:
            raise DiyError(f"container {names.container} is busy: its monitor (pid {rt['monitor_pid']}) "
                           "is still cleaning up; try again")
        wait_for_monitor(rt, timeout=1)
    try:
        yield lock
    finally:
        if not os.path.isdir(names.container_dir):
            lock.remove()
        lock.release()


def restarting(names: Names) -> bool:
    """Between two runs of a restart policy: the monitor waits out its back-off, no init runs."""
    record = load_record(names) or {}
    if not (record.get("last") or {}).get("restarting"):
        return False
    _, init_alive, monitor_alive = facts(names)
    return monitor_alive and not init_alive


def refuse_restarting(names: Names, what: str) -> None:
    if restarting(names):
        raise DiyError(f"cannot {what} container {names.container}: it is restarting (its restart policy); "
                       f"stop it first (invoke stop {names.container})")


def running_pid(names: Names, with_monitor: bool = True) -> int | None:
    """The init's pid while it runs (under a live monitor unless with_monitor is False)."""
    rt, init_alive, monitor_alive = facts(names)
    return rt["init_pid"] if init_alive and (monitor_alive or not with_monitor) else None


def stop_orphan(ctx: Context) -> None:
    """An init whose monitor was killed is stopped before a resumed run or start touches
    its mounts: nothing may run in the rootfs while the volumes are resolved."""
    from steps.launch import LaunchStep

    if running_pid(ctx.names, with_monitor=False):
        LaunchStep(ctx).undo()


def user_stops(names: Names, removing: bool = False) -> None:
    """A user's stop, rm -f or teardown ends a restart policy's restarting for good (before any
    signal; a monitor in its back-off notices at once and cleans up). removing: a full disk that
    cannot take the mark does not stop the removal (the record goes with it anyway)."""
    from steps.runtime.restart import mark_stopped

    try:
        mark_stopped(names)
    except OSError as e:
        import errno

        if not removing or e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise


def wait_for_monitor(rt: dict | None, timeout: float = 30) -> None:
    """Let a monitor finish its clean-up (it needs the lock we just released)."""
    from steps.facts import process_alive

    if rt is None or rt.get("monitor_pid") == os.getpid():
        return
    deadline = time.monotonic() + timeout
    while process_alive(rt["monitor_pid"], rt["monitor_start"]) and time.monotonic() < deadline:
        time.sleep(0.02)
