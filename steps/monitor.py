"""The monitor: forks the container's init, forwards signals, waits, cleans up.

In the foreground the invoking process is the monitor; `start` (detached)
forks a daemon monitor that outlives the command. Either way the monitor is
a child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER), so the init - forked by
a short-lived setup process to land in the new pid namespace as PID 1 - is
reparented to it and its exit status is ours to read.
"""
from __future__ import annotations

import os
import signal
import sys

from steps import EXIT_DIY_FAILED, StepFailed, faults, linux
from steps.facts import boot_id, catches_signal, process_start
from steps.state import load_record, load_runtime, now_iso, remove_file, update_record, write_json

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    return chunks and b"".join(chunks) or b""


def decode_status(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class Monitor:
    def __init__(self, ctx):
        self.ctx = ctx
        self.init_pid = 0
        self.init_start = 0
        self.signals_seen = 0

    def plan(self) -> dict:
        from steps.launch import command_argv, container_env

        spec = self.ctx.spec
        return {"cgroup": self.ctx.names.cgroup_path, "rootfs": self.ctx.names.merged,
                "hostname": spec.get("hostname") or self.ctx.names.container,
                "workdir": spec.get("workdir") or "/", "tty": self.ctx.tty,
                "argv": command_argv(spec), "env": container_env(spec, self.ctx.tty)}

    def spawn(self) -> int:
        """Start the init; returns its pid once it has exec'd the command."""
        from steps.init import setup

        plan = self.plan()
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        child = os.fork()
        if child == 0:
            for fd in (err_r, pid_r, go_w):
                os.close(fd)
            setup(plan, err_w, pid_w, go_r)
        for fd in (err_w, pid_w, go_r):
            os.close(fd)
        pid_text = read_all(pid_r).decode().strip()
        os.waitpid(child, 0)
        if not pid_text:
            os.close(go_w)
            raise self.failure(read_all(err_r))
        self.init_pid = int(pid_text)
        self.init_start = process_start(self.init_pid) or 0
        self.record_runtime()
        faults.point("launch.apply.mid")
        self.install_handlers()  # from "go" on, a Ctrl-C is the container's, not the pipeline's
        os.write(go_w, b"g")
        os.close(go_w)
        error = read_all(err_r)
        if error:
            self.restore_handlers()
            os.waitpid(self.init_pid, 0)
            remove_file(self.ctx.names.runtime_state)
            raise self.failure(error)
        update_record(self.ctx.names, started_at=now_iso(), finished_at=None, exit_code=None,
                      oom_killed=False, pid=self.init_pid)
        return self.init_pid

    def failure(self, raw: bytes) -> StepFailed:
        code, _, message = raw.decode(errors="replace").partition(" ")
        if not code.isdigit():
            return StepFailed("cannot start the container: its setup died without a word", EXIT_DIY_FAILED)
        return StepFailed(message, int(code))

    def record_runtime(self) -> None:
        me = os.getpid()
        write_json(self.ctx.names.runtime_state, {
            "init_pid": self.init_pid, "init_start": self.init_start,
            "monitor_pid": me, "monitor_start": process_start(me),
            "boot_id": boot_id(), "started_at": now_iso()})

    # --- waiting -------------------------------------------------------------

    def forward(self, signo: int, _frame=None) -> None:
        """Pass a signal on. PID 1 ignores signals it has no handler for, so where
        the init does not catch it, do what the default action would: end it."""
        self.signals_seen += 1
        if not self.init_pid:
            return
        if signo == signal.SIGINT and self.signals_seen > 1 or not catches_signal(self.init_pid, signo):
            signo = signal.SIGKILL
        try:
            os.kill(self.init_pid, signo)
        except ProcessLookupError:
            pass

    def install_handlers(self) -> None:
        self.previous = {s: signal.signal(s, self.forward) for s in FORWARDED}
        self.previous[signal.SIGTTOU] = signal.signal(signal.SIGTTOU, signal.SIG_IGN)

    def restore_handlers(self) -> None:
        for s, handler in getattr(self, "previous", {}).items():
            signal.signal(s, handler)
        self.previous = {}

    def wait(self) -> int:
        """Wait for the init to end; returns its exit code as a shell reports it."""
        try:
            while True:
                pid, status = os.waitpid(-1, 0)
                if pid == self.init_pid:
                    return decode_status(status)
        except ChildProcessError:
            return EXIT_DIY_FAILED
        finally:
            self.reclaim_terminal()
            self.restore_handlers()

    def reclaim_terminal(self) -> None:
        if self.ctx.tty:
            try:
                os.tcsetpgrp(0, os.getpgrp())
            except OSError:
                pass

    # --- after the exit ------------------------------------------------------

    def mine(self) -> bool:
        """Whether the runtime state still names our init (or nothing): nobody restarted it."""
        rt = load_runtime(self.ctx.names)
        return rt is None or (rt.get("init_pid"), rt.get("init_start")) == (self.init_pid, self.init_start)

    def finish(self, code: int, reporter, remove: bool = False) -> int:
        """Record the exit and undo the runtime steps, under the container's lock."""
        from steps.cgroup import oom_kills
        from steps.pipeline import Engine
        from steps.state import container_lock

        oom = self.safe_oom_kills(oom_kills)
        with container_lock(self.ctx.names) as lock:
            if load_record(self.ctx.names) is None:  # removed meanwhile (rm --force, teardown)
                lock.remove()
                return code
            if not self.mine():
                return code  # restarted meanwhile by another command: not ours to clean
            Engine(self.ctx, reporter, pipeline="exit").run("stop")
            update_record(self.ctx.names, finished_at=now_iso(), exit_code=code, oom_killed=oom)
            if remove:
                Engine(self.ctx, reporter, pipeline="rm").run("rm")
                lock.remove()
        return code

    def safe_oom_kills(self, counter) -> bool:
        try:
            return counter(self.ctx.names.cgroup_path) > 0
        except OSError:
            return False


def spawn_detached(ctx) -> int:
    """Fork a daemon monitor (double fork, new session); returns the init's pid."""
    r, w = os.pipe2(os.O_CLOEXEC)
    first = os.fork()
    if first == 0:
        os.close(r)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        daemon(ctx, w)
    os.close(w)
    os.waitpid(first, 0)
    answer = read_all(r).decode(errors="replace")
    status, _, rest = answer.partition(" ")
    if status == "ok":
        return int(rest)
    code, _, message = rest.partition(" ")
    raise StepFailed(message or "the monitor died while starting the container",
                     int(code) if code.isdigit() else EXIT_DIY_FAILED)


def daemon(ctx, w: int) -> None:
    """The detached monitor's life; never returns."""
    from steps.report import Reporter

    try:
        log = os.open(ctx.names.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, w)
        os.closerange(w + 1, os.sysconf("SC_OPEN_MAX"))  # the caller's locks among them
        ctx.attach, ctx.tty = False, False
        monitor = Monitor(ctx)
        pid = monitor.spawn()
        os.write(w, f"ok {pid}".encode())
        os.close(w)
    except BaseException as e:  # noqa: BLE001
        code = getattr(e, "code", EXIT_DIY_FAILED)
        os.write(w, f"err {code} {e}".encode(errors="replace"))
        os._exit(1)
    try:
        code = monitor.wait()
        with open(os.devnull, "w") as quiet:  # the log is the container's; steps go to the journal
            monitor.finish(code, Reporter(stream=quiet, color=False), remove=ctx.spec.get("rm", False))
    except BaseException as e:  # noqa: BLE001
        print(f"monitor: {e}", file=sys.stderr, flush=True)
    os._exit(0)
