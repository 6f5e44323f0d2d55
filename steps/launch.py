"""The launch stage: the container's init runs in its namespaces and cgroup.

check reads the runtime state (init and monitor pids with their start times,
the boot id) and asks /proc whether both still live; undo stops the init
(SIGTERM, a grace period, SIGKILL) and drops the runtime state.
"""
from __future__ import annotations

import os
import signal
import time

from steps import Change, Step, absent, applied, faults, partial
from steps.facts import boot_id, catches_signal, process_alive, process_start
from steps.runtime.command import command_argv
from steps.runtime.health import clear as clear_health
from steps.state import load_runtime, remove_file, update_record


def runtime_facts(names) -> tuple[dict | None, bool, bool]:
    """(runtime state, init alive, monitor alive); a state from another boot is dead."""
    rt = load_runtime(names)
    if rt is None or rt.get("boot_id") != boot_id():
        return rt, False, False
    return (rt, process_alive(rt.get("init_pid"), rt.get("init_start")),
            process_alive(rt.get("monitor_pid"), rt.get("monitor_start")))


def wait_gone(pid: int, start: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_start(pid) == start:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def terminate(pid: int, start: int, grace: float, signo: int = signal.SIGTERM, waited: bool = False) -> None:
    """The stop signal (SIGTERM), a grace period, then SIGKILL. PID 1 ignores a signal it
    neither catches nor blocks, so waiting would only delay the SIGKILL: send it at once then.
    waited: PID 1 is --init's tini, which takes every signal with sigtimedwait(2) (the kernel
    unblocks them during the wait, so /proc shows neither a handler nor a block) and passes
    it on."""
    try:
        if (waited or handles_signal(pid, signo)) and process_start(pid) == start:
            os.kill(pid, signo)
            if wait_gone(pid, start, grace):
                return
        if process_start(pid) == start:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_gone(pid, start, 30)


def handles_signal(pid: int, signo: int) -> bool:
    from steps.facts import parse_status_mask

    if catches_signal(pid, signo):
        return True
    try:
        with open(f"/proc/{pid}/status") as f:
            return bool(parse_status_mask(f.read(), "SigBlk") >> (signo - 1) & 1)
    except FileNotFoundError:
        return False


def stop_signal(ctx) -> int:
    """--stop-signal, else the image's StopSignal, else SIGTERM."""
    from steps import BadInput
    from steps.image import container_config
    from steps.runflags import parse_stop_signal
    from steps.runtime.signals import signal_number

    name = ctx.spec.get("stop_signal")
    if name is None and ctx.spec.get("image_id"):
        try:
            name = parse_stop_signal(container_config(ctx.instance, ctx.spec).get("StopSignal"))
        except (BadInput, OSError, ValueError):
            name = None  # an image with a signal we do not know: Docker's default
    return signal_number(name) if name else signal.SIGTERM


def thaw_container(cgroup_path: str) -> None:
    """A container that froze itself (v1 freezer, possible with --privileged) would sleep through
    SIGTERM and SIGKILL: thaw its subtree first."""
    from steps.cgroup import cgroup_dirs
    from steps.runtime.cgroups import thaw

    for h, d in cgroup_dirs(cgroup_path):
        if "freezer" in h.controllers and os.path.isdir(d):
            thaw(d)


class LaunchStep(Step):
    name = "launch"

    def check(self):
        rt, init_alive, monitor_alive = runtime_facts(self.ctx.names)
        from steps.image import container_config

        argv = command_argv(self.ctx.spec, container_config(self.ctx.instance, self.ctx.spec))
        start = Change("start init", "stopped", " ".join(argv))
        if rt is None:
            return absent([start])
        if monitor_alive:  # the container is up until its monitor has cleaned up after it
            return applied(f"init pid {rt['init_pid']}" + ("" if init_alive else " (exited)"))
        if rt.get("boot_id") != boot_id():
            return partial([start], "stopped by a reboot")
        if init_alive:
            return partial([start], f"init pid {rt['init_pid']} runs without its monitor")
        return partial([start], "init exited; runtime state left")

    def apply(self):
        from steps.runtime.monitor import Monitor, spawn_detached

        if self.check().applied:
            return
        self.undo()  # a stale state or an orphaned init: start from nothing
        # A user's run or start (as Docker's): the restart count starts again, a stop is forgotten.
        update_record(self.ctx.names, restart_count=0, stopped_by_user=False, restarting=False)
        if self.ctx.attach:
            self.ctx.monitor = Monitor(self.ctx)
            self.ctx.monitor.spawn()
        else:
            spawn_detached(self.ctx)

    def undo(self):
        rt, init_alive, _ = runtime_facts(self.ctx.names)
        if rt is None:
            return
        if init_alive:
            grace = self.ctx.spec.get("stop_timeout", self.ctx.instance.stop_timeout)
            thaw_container(self.ctx.names.cgroup_path)
            terminate(rt["init_pid"], rt["init_start"], grace, stop_signal(self.ctx), bool(self.ctx.spec.get("init")))
        faults.point("launch.undo.mid")
        remove_file(self.ctx.names.runtime_state)
        remove_file(self.ctx.names.attach_socket)  # left by a monitor that was killed
        clear_health(self.ctx.names)  # the init it judged is gone
        try:
            os.rmdir(self.ctx.names.runtime_dir)
        except OSError:
            pass
