"""`exec`: one more process in a running container, as Docker's exec.

The invoking process does what the monitor does for the init: it settles the plan (the
container's own profile: capabilities, the same compiled seccomp program, no_new_privs; its
user, environment and workdir unless -u, -e, -w say otherwise), forks the joining process
(enter.py), relays stdio and forwards signals until the command ends, and returns its exit
code. It is a child subreaper, so the command - forked inside the container's pid namespace
by the joining process, which then exits - is reparented to it and its status is ours.
With --detach the command's own parent leaves too: it is reparented to the container's init,
and dies with the container.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

from steps import EXIT_DIY_FAILED, BadInput, DiyError, StepFailed, linux
from steps.runtime.monitor import FORWARDED, decode_status, read_all


@dataclass
class ExecOptions:
    """The flags of `exec`, as given."""
    name: str
    command: list[str] = field(default_factory=list)
    detach: bool = False
    interactive: bool = False
    tty: bool = False
    env: list[str] = field(default_factory=list)
    user: str | None = None
    workdir: str | None = None


def running_container(ref: str, op: str) -> tuple:
    """(names, record, runtime state) of a running container; else refused in one line."""
    from steps import config
    from steps.launch import runtime_facts
    from steps.state import find_container, load_record

    names = find_container(config.load(), ref)
    record = load_record(names)
    if record is None:
        raise DiyError(f"cannot {op} {ref}: no such container (see invoke ps)")
    rt, alive, _ = runtime_facts(names)
    if not alive:
        raise DiyError(f"cannot {op} {names.container}: it is not running")
    return names, record, rt


def exec_plan(opts: ExecOptions) -> dict:
    """Everything the joining process needs, validated and settled before any fork."""
    from steps.pipeline import Context
    from steps.runtime.plan import build
    from steps.spec import parse_command, parse_env, parse_user, parse_workdir

    argv = parse_command(opts.command)
    if not argv:
        raise BadInput("bad command: exec needs one after --, e.g. invoke exec NAME -- /bin/sh")
    env, user, workdir = parse_env(opts.env), parse_user(opts.user), parse_workdir(opts.workdir)
    names, record, rt = running_container(opts.name, "exec in")
    tty = opts.tty and not opts.detach  # nobody would read a detached command's terminal
    spec = {**record, "tty": tty, "env": list(record.get("env") or []) + env,
            "user": user or record.get("user"), "workdir": workdir or record.get("workdir")}
    plan = build(Context(names.instance, names, spec))
    return {**plan, "argv": argv, "name": names.container, "detach": opts.detach, "tty": tty,
            "winsize": window_size() if tty else None, "init_pid": rt["init_pid"], "init_start": rt["init_start"]}


def window_size() -> bytes | None:
    """The caller's terminal size (TIOCGWINSZ), for the command's pty; None when not a terminal."""
    import fcntl
    import termios

    try:
        return fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8) if os.isatty(0) else None
    except OSError:
        return None


def exec_in(opts: ExecOptions) -> tuple[int, int]:
    """Run the command; (exit code, its host pid). With --detach the code is 0 once it runs."""
    from steps.runtime.stdio import check_terminal

    check_terminal(opts.tty, opts.interactive, opts.detach)
    runner = Runner(exec_plan(opts), opts.interactive and not opts.detach)
    pid = runner.start()
    return (0 if opts.detach else runner.wait()), pid


def announced_pid(sock) -> int | None:
    """The pid of the process that wrote to sock, as this process sees it (SCM_CREDENTIALS)."""
    import socket
    import struct

    _, ancillary, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(struct.calcsize("iII")))
    for level, kind, data in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
            return struct.unpack("iII", data[:struct.calcsize("iII")])[0]
    return None  # it died before it could say


class Runner:
    def __init__(self, plan: dict, interactive: bool):
        self.plan = plan
        self.interactive = interactive
        self.stdio = None
        self.pid = 0
        self.pids: list[int] = []  # the joining process's child (and, detached, the command)
        self.interrupts = 0
        self.reaped = False  # the joining process: once reaped, its pid is nobody's to signal

    def child_fds(self) -> dict:
        """A detached command gets /dev/null; else pipes or a pty relayed by us (stdio.py)."""
        if self.plan["detach"]:
            import socket

            self.null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            self.announce = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.announce[0].setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            return {"stdio": [self.null] * 3, "console": self.announce[1].fileno()}
        from steps.runtime.stdio import Stdio

        self.stdio = Stdio(self.plan["tty"], self.interactive)
        self.stdio.prepare()
        return self.stdio.child_fds()

    def start(self) -> int:
        """Fork the joining process; returns the command's host pid once it has exec'd."""
        from steps.runtime.enter import join

        fds = self.child_fds()
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
        child = os.fork()
        if child == 0:
            try:
                os.close(err_r)
                os.close(pid_r)
                join(self.plan, {**fds, "err_w": err_w, "pid_w": pid_w})
            finally:
                os._exit(EXIT_DIY_FAILED)  # never back into the caller's code
        os.close(err_w)
        os.close(pid_w)
        self.after_fork()
        try:
            return self.started(child, pid_r, err_r)
        except BaseException:
            self.abort(child)
            raise

    def after_fork(self) -> None:
        if self.stdio is not None:
            self.stdio.after_fork()
        else:
            os.close(self.null)
            self.announce[1].close()

    def started(self, child: int, pid_r: int, err_r: int) -> int:
        self.pids = [int(p) for p in read_all(pid_r).split()]
        os.waitpid(child, 0)  # from now on its child is ours (a subreaper's)
        self.reaped = True
        if not self.pids:
            raise self.failure(read_all(err_r))
        self.pid = self.pids[0]
        if self.stdio is not None:
            self.stdio.receive_terminal()  # the pty master (--tty); None when it failed first
        else:
            self.pid = announced_pid(self.announce[0]) or 0
            self.announce[0].close()
        error = read_all(err_r)  # EOF: the command was exec'd (the pipe is close-on-exec)
        if error:
            raise self.failure(error)
        if self.plan["detach"]:
            os.waitpid(self.pids[0], 0)  # the command's parent, which left at once
        return self.pid

    def failure(self, raw: bytes) -> StepFailed:
        code, _, message = raw.decode(errors="replace").partition(" ")
        if not code.isdigit():
            return StepFailed(f"cannot exec in {self.plan['name']}: the joining process died without a word")
        return StepFailed(message, int(code))

    def abort(self, child: int) -> None:
        """Fail closed: whatever was forked is killed and reaped; nothing runs half-joined."""
        joining = [] if self.reaped else [child]
        for pid in joining + self.pids + ([self.pid] if self.pid not in self.pids + [0] else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in joining + self.pids[:1]:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if self.stdio is not None:
            self.stdio.close()

    def forward(self, signo: int, _frame=None) -> None:
        """Pass a signal on (the command is not PID 1: its default actions apply);
        a second Ctrl-C kills."""
        if signo == signal.SIGINT:
            self.interrupts += 1
        try:
            os.kill(self.pid, signal.SIGKILL if self.interrupts > 1 else signo)
        except ProcessLookupError:
            pass

    def wait(self) -> int:
        """Relay until the command ends; its exit code as a shell reports it."""
        previous = {s: signal.signal(s, self.forward) for s in FORWARDED}
        try:
            self.stdio.relay(self.pid)
            _, status = os.waitpid(self.pid, 0)
            return decode_status(status)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
