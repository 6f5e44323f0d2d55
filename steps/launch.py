"""The launch stage: the container's init runs in its namespaces and cgroup.

check reads the runtime state (init and monitor pids with their start times,
the boot id) and asks /proc whether both still live; undo stops the init
(SIGTERM, a grace period, SIGKILL) and drops the runtime state.
"""
from __future__ import annotations

import os
import signal
import stat
import time

from steps import Change, Step, absent, applied, faults, partial
from steps.facts import boot_id, catches_signal, process_alive, process_start
from steps.state import load_runtime, remove_file

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def command_argv(spec: dict, config: dict | None = None) -> list[str]:
    """Entrypoint + Cmd, as Docker builds them: --entrypoint replaces the image's
    Entrypoint and drops its Cmd; a command after `--` replaces Cmd; else /bin/sh."""
    config = config or {}
    if spec.get("entrypoint") is not None:
        entry, default_cmd = list(spec["entrypoint"]), []
    else:
        entry, default_cmd = list(config.get("Entrypoint") or []), list(config.get("Cmd") or [])
    cmd = list(spec.get("command") or default_cmd)
    argv = entry + cmd
    return argv or ["/bin/sh"]


def container_env(spec: dict, tty: bool, config: dict | None = None, home: str = "/root") -> dict[str, str]:
    """Defaults, then the image's Env, then --env."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": spec.get("hostname") or spec["name"], "HOME": home}
    if tty:
        env["TERM"] = os.environ.get("TERM", "xterm")
    for item in list((config or {}).get("Env") or []) + list(spec.get("env") or []):
        key, _, value = item.partition("=")
        env[key] = value
    return env


def read_db(rootfs: str, path: str) -> list[list[str]]:
    """The lines of the image's /etc/passwd or /etc/group, split on ':' (resolved inside
    the rootfs, opened without following a last symlink; a missing file is empty)."""
    from steps.volumes import resolve_in_root

    host = resolve_in_root(rootfs, path)
    if host is None:
        return []
    try:  # O_PATH first: a device node the image put there is never opened on the host
        probe = os.open(host, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(probe).st_mode):
            return []
        fd = os.open(f"/proc/self/fd/{probe}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(probe)
    with os.fdopen(fd, "rb") as f:
        data = f.read(4 << 20).decode("utf-8", "replace")
    return [line.split(":") for line in data.splitlines() if line and not line.startswith("#")]


def resolve_user(rootfs: str, user: str | None) -> dict | None:
    """NAME|UID[:GROUP|GID] -> uid, gid, supplementary groups and home, from the image's
    own files (Docker's rules: a numeric uid need not exist; its gid is then 0)."""
    from steps import StepFailed

    if not user:
        return None
    name, _, group = user.partition(":")
    passwd = [e for e in read_db(rootfs, "/etc/passwd") if len(e) >= 7 and e[2].isdigit() and e[3].isdigit()]
    entry = next((e for e in passwd if e[0] == name or (name.isdigit() and e[2] == name)), None)
    if entry is None and not name.isdigit():
        raise StepFailed(f"unable to find user {name}: no matching entries in the image's /etc/passwd")
    uid = int(name) if name.isdigit() else int(entry[2])
    gid = int(entry[3]) if entry else 0
    groups_db = [e for e in read_db(rootfs, "/etc/group") if len(e) >= 4 and e[2].isdigit()]
    if group:
        match = next((e for e in groups_db if e[0] == group or (group.isdigit() and e[2] == group)), None)
        if match is None and not group.isdigit():
            raise StepFailed(f"unable to find group {group}: no matching entries in the image's /etc/group")
        gid = int(group) if group.isdigit() else int(match[2])
    login = entry[0] if entry else None
    extra = sorted({int(e[2]) for e in groups_db if login and login in e[3].split(",")})
    return {"uid": uid, "gid": gid, "groups": sorted({gid, *extra}), "home": entry[5] if entry else "/"}


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


def terminate(pid: int, start: int, grace: float) -> None:
    """SIGTERM, a grace period, then SIGKILL. PID 1 ignores a SIGTERM it does not
    catch, so waiting would only delay the SIGKILL: send it at once then."""
    try:
        if catches_signal(pid, signal.SIGTERM) and process_start(pid) == start:
            os.kill(pid, signal.SIGTERM)
            if wait_gone(pid, start, grace):
                return
        if process_start(pid) == start:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_gone(pid, start, 30)


class LaunchStep(Step):
    name = "launch"

    def check(self):
        rt, init_alive, monitor_alive = runtime_facts(self.ctx.names)
        start = Change("start init", "stopped", " ".join(command_argv(self.ctx.spec)))
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
            terminate(rt["init_pid"], rt["init_start"], grace)
        faults.point("launch.undo.mid")
        remove_file(self.ctx.names.runtime_state)
        try:
            os.rmdir(self.ctx.names.runtime_dir)
        except OSError:
            pass
