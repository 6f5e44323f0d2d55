"""The container's fds 0-2, decided by the monitor: never the caller's own files.

Docker's rules: stdin is /dev/null unless --interactive; with --tty the container gets a pty of
its own devpts instance (the init opens it and sends the master back); without it, pipes of ours
that the monitor relays to and from the caller's fds. Never the caller's fds themselves: through
/proc/self/fd/N a process may reopen what it was given with another mode (write a file it was
given to read, read the caller's whole log it appends to, learn host paths), and a terminal would
let it push input (TIOCSTI) or take it as its own (TIOCSCTTY, /dev/tty).
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys


def check_terminal(tty: bool, interactive: bool, detach: bool) -> None:
    """-i -t in the foreground relay our stdin to a pty in raw mode: it must be a terminal (as Docker)."""
    if tty and interactive and not detach and not os.isatty(0):
        from steps import BadInput

        raise BadInput("the input device is not a TTY: --interactive --tty (-it) need a terminal on stdin; "
                       "leave out --tty (-t) to pipe input", 1)


class Stdio:
    def __init__(self, tty: bool, interactive: bool, detached: bool = False, log=None,
                 attach_socket: str | None = None):
        self.tty = tty
        self.interactive = interactive
        self.detached = detached             # output is recorded only, never relayed to our fds
        self.socket_path = attach_socket     # detached and interactive: stdin comes from `attach`
        self.listeners: set[int] = set()
        self.log = log                       # the container's log (logfile.LogWriter): every run
        self.streams: dict[int, str] = {}    # relay source -> "stdout"|"stderr", for the log
        self.child: list[int] = []           # what the setup process dup2s onto 0, 1, 2
        self.pairs: list[tuple[int, int]] = []
        self.to_container: set[int] = set()  # relay sources whose EOF closes the container's stdin
        self.ours: list[int] = []            # fds to close in the monitor once the child has them
        self.console = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.master: int | None = None

    def prepare(self) -> None:
        """Open what the child gets; call before fork."""
        null = self.keep(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
        if self.tty:
            self.child = [null, null, null]
            return
        self.child = [self.stdin(null), self.output(1, "stdout"), self.output(2, "stderr")]

    def keep(self, fd: int) -> int:
        self.ours.append(fd)
        return fd

    def stdin(self, null: int) -> int:
        if not self.interactive:
            return null
        r, w = os.pipe2(os.O_CLOEXEC)
        source = self.stdin_source()
        self.pairs.append((source, w))
        self.to_container.add(source)
        return self.keep(r)

    def stdin_source(self) -> int:
        """Our stdin; detached, a unix socket where `attach` connects for as long as the container
        runs (its stdin stays open between attaches, as with Docker's -di)."""
        if not self.detached:
            return 0
        if not self.listeners:
            self.listeners.add(listen(self.socket_path))
        return next(iter(self.listeners))

    def output(self, caller: int, stream: str) -> int:
        r, w = os.pipe2(os.O_CLOEXEC)
        self.pairs.append((r, None if self.detached else caller))
        self.streams[r] = stream
        return self.keep(w)

    def child_fds(self) -> dict:
        return {"stdio": self.child, "console": self.console[1].fileno()}

    def after_fork(self) -> None:
        """The child has its ends: the monitor keeps only the relay's."""
        self.console[1].close()
        relayed = {fd for pair in self.pairs for fd in pair if fd is not None}
        for fd in self.ours:
            if fd not in relayed:
                os.close(fd)

    def receive_terminal(self) -> None:
        """The pty master the init sent (tty only); None when the init failed first."""
        if self.tty:
            from steps.runtime import terminal

            self.master = terminal.receive_fd(self.console[0].fileno())
            if self.master is not None:
                self.pairs = [(self.master, None if self.detached else 1)] + \
                    ([(self.stdin_source(), self.master)] if self.interactive else [])
                self.streams = {self.master: "stdout"}  # a terminal has one output, as Docker's -t
                if os.isatty(0) and not self.detached:  # before the command runs: `stty size` inside must see it
                    terminal.copy_window_size(0, self.master)
        self.console[0].close()

    def relay(self, init_pid: int, prober=None) -> None:
        """Copy bytes until the init has exited; the caller's terminal raw meanwhile (tty). prober:
        the health checks' timing (shim.Prober), run from the same loop."""
        if not self.pairs:
            return
        from steps.runtime import terminal

        previous = None
        with terminal.RawMode(0) if self.tty and self.interactive else contextlib.nullcontext():
            if self.master is not None and os.isatty(0):
                previous = terminal.forward_window_changes(0, self.master)
            try:
                terminal.Relay(self.pairs, self.to_container, self.streams, self.log,
                               self.listeners).run(init_pid, prober)
            finally:
                if previous is not None:
                    signal.signal(signal.SIGWINCH, previous)
                self.close()
                self.close_log()

    def close(self) -> None:
        for fd in {fd for pair in self.pairs for fd in pair if fd is not None and fd > 2}:
            try:
                os.close(fd)
            except OSError:
                pass
        self.pairs = []
        if self.listeners and self.socket_path:
            self.listeners = set()
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass

    def abandon(self) -> None:
        """The init failed before it ran: the relay's fds and the log both go (a monitor that
        retries under a restart policy would otherwise keep one log fd per failed launch)."""
        self.close()
        self.close_log()

    def close_log(self) -> None:
        """Close the log; say how many records a failing disk cost (the monitor's own output)."""
        if self.log is None:
            return
        self.log.close()
        if self.log.dropped:
            print(f"diy-docker: cannot write {self.log.path}: {self.log.dropped} log records dropped",
                  file=sys.stderr, flush=True)


def listen(path: str) -> int:
    """A listening unix socket at path that only its owner (root) may connect to: connecting
    needs write permission on the socket file (unix(7)), so it is made 0600 from the start."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.unlink(path)  # a killed monitor's
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(4)
    return sock.detach()
