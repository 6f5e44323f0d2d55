"""The container's terminal and the caller's, kept apart.

The container never holds the caller's terminal: with --tty it gets a pty of its own
devpts instance (pts(4), newinstance), whose master comes back to the monitor over a
socket (SCM_RIGHTS, unix(7)); without it, pipes or files. The monitor relays bytes
between the caller and the container, with the caller's terminal in raw mode (restored
on every exit path) so that Ctrl-C and friends reach the container's own line discipline,
as `docker run -it` does. A TIOCSTI from inside can then only reach its own pty.
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import struct
import termios
import tty

TIOCSPTLCK = 0x40045431  # unlockpt(3)
TIOCGPTPEER = 0x5441     # open the peer through the master, never by path (ioctl_tty(2), Linux 4.13)
CHUNK = 65536


# --- inside the container (the init, after pivot_root) ----------------------

def open_container_pty(ptmx: str = "/dev/ptmx") -> tuple[int, int]:
    """(master, slave) of a new pty of the container's own devpts instance."""
    master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    return master, slave


def make_controlling(slave: int, uid: int) -> None:
    """The pty becomes the controlling terminal of this new session and its stdio, owned by the
    user the command runs as (so it can reopen its own terminal, as with runc)."""
    os.fchown(slave, uid, -1)
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def send_fd(sock: int, fd: int) -> None:
    with socket.socket(fileno=os.dup(sock)) as s:
        socket.send_fds(s, [b"m"], [fd])


def receive_fd(sock: int) -> int | None:
    """The fd the init sent, or None when it closed the socket first (it failed)."""
    with socket.socket(fileno=os.dup(sock)) as s:
        _, fds, _, _ = socket.recv_fds(s, 1, 1)
    return fds[0] if fds else None


# --- on the caller's side (the monitor) -------------------------------------

class RawMode:
    """The caller's terminal in raw mode while the container owns the keyboard; restored after."""

    def __init__(self, fd: int):
        self.fd = fd
        self.saved = None

    def __enter__(self):
        if os.isatty(self.fd):
            try:
                self.saved = termios.tcgetattr(self.fd)
                tty.setraw(self.fd, termios.TCSANOW)
            except termios.error:
                self.saved = None
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            except termios.error:
                pass


def copy_window_size(src: int, dst: int) -> None:
    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass


class Relay:
    """Copies bytes src -> dst for each pair until the init is gone and its output drained.

    Writes are non-blocking with a pending buffer, so a container that stops reading its
    stdin never stalls its own output."""

    def __init__(self, pairs: list[tuple[int, int | None]], to_container: set[int],
                 tee: dict[int, str] | None = None, log=None, listeners: set[int] | None = None):
        self.pairs = dict(pairs)  # a destination None: recorded only (a detached container)
        self.pending = {dst: b"" for dst in self.pairs.values() if dst is not None}
        self.to_container = to_container  # sources whose EOF closes their destination
        self.tee = tee or {}  # source -> "stdout"|"stderr": its chunks go to the log too
        self.log = log
        self.listeners = listeners or set()  # sockets whose connections feed their destination
        self.clients: set[int] = set()       # those connections (`attach` with stdin)
        for dst in self.pending:
            if dst > 2:  # never the caller's own fds: their file descriptions are shared with its shell
                os.set_blocking(dst, False)

    def run(self, init_pid: int) -> None:
        pidfd = os.pidfd_open(init_pid)
        try:
            while not self.step(pidfd):
                pass
            self.drain()
        finally:
            os.close(pidfd)
            for fd in self.clients:
                os.close(fd)

    def step(self, pidfd: int) -> bool:
        """One select round; True when the init has exited."""
        readers = [src for src, dst in self.pairs.items() if dst is None or len(self.pending[dst]) < CHUNK]
        writers = [dst for dst, data in self.pending.items() if data]
        try:
            r, w, _ = select.select(readers + [pidfd], writers, [])
        except InterruptedError:
            return False
        for dst in w:
            self.flush(dst)
        for src in r:
            if src != pidfd:
                self.pump(src)
        return pidfd in r

    def pump(self, src: int) -> None:
        if src in self.listeners:
            return self.accept(src)
        try:
            data = os.read(src, CHUNK)
        except OSError as e:
            if e.errno == errno.EAGAIN:
                return
            data = b""  # EIO: the pty's other side is closed
        dst = self.pairs[src]
        if not data:
            del self.pairs[src]
            if src in self.clients:  # one attach ended; the container's stdin stays open
                self.clients.discard(src)
                os.close(src)
                return
            if src in self.to_container and dst not in self.pairs.values():
                self.close_when_flushed(dst)
            return
        if src in self.tee and self.log is not None:
            self.log.record(self.tee[src], data)
        if dst is None:
            return
        self.pending[dst] += data
        self.flush(dst)

    def accept(self, listener: int) -> None:
        """A new `attach`: what it sends goes where the listener's connections go."""
        sock = socket.socket(fileno=listener)
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        finally:
            sock.detach()  # the fd stays ours, closed with the relay's others
        fd = conn.detach()
        self.clients.add(fd)
        self.pairs[fd] = self.pairs[listener]

    def close_when_flushed(self, dst: int) -> None:
        self.flush(dst)
        if not self.pending.get(dst) and dst in self.pending:
            del self.pending[dst]
            if dst > 2:
                os.close(dst)

    def flush(self, dst: int) -> None:
        data = self.pending.get(dst)
        if not data:
            return
        try:
            sent = os.write(dst, data)
        except BlockingIOError:
            return
        except OSError:
            sent = len(data)  # the reader is gone: drop what it would never read
        self.pending[dst] = data[sent:]

    def drain(self) -> None:
        """What the container wrote before it ended, then whatever is still buffered."""
        quiet = self.to_container | self.listeners | self.clients
        for src in [s for s in self.pairs if s not in quiet]:
            os.set_blocking(src, False)
            while src in self.pairs:
                self.pump(src) if self.readable(src) else self.pairs.pop(src)
        for dst in list(self.pending):
            try:
                os.set_blocking(dst, True)
                while self.pending[dst]:
                    self.pending[dst] = self.pending[dst][os.write(dst, self.pending[dst]):]
            except OSError:
                pass

    @staticmethod
    def readable(fd: int) -> bool:
        return bool(select.select([fd], [], [], 0)[0])


def forward_window_changes(caller: int, master: int) -> object:
    """Resize the container's pty whenever the caller's terminal is resized (SIGWINCH)."""
    copy_window_size(caller, master)
    return signal.signal(signal.SIGWINCH, lambda *_: copy_window_size(caller, master))
