"""The container's terminal and the caller's, kept apart.

The container never holds the caller's terminal: with --tty it gets a pty of its own
devpts instance (pts(4), newinstance), whose master comes back to the monitor over a
socket (SCM_RIGHTS, unix(7)); without it, pipes or files. The monitor relays bytes
between the caller and the container, with the caller's terminal in raw mode (restored
on every exit path) so that Ctrl-C and friends reach the container's own line discipline,
as `docker run -it` does. A TIOCSTI from inside can then only reach its own pty.
"""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import termios
import tty

from steps.runtime import shim

TIOCSPTLCK = 0x40045431  # unlockpt(3)
TIOCGPTPEER = 0x5441     # open the peer through the master, never by path (ioctl_tty(2), Linux 4.13)


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


class Relay(shim.Relay):
    """The foreground monitor's relay: the detached shim's own (steps/runtime/shim.py), run on
    the init's pid; the `attach` connections are closed when it ends."""

    def run(self, init_pid: int, prober=None) -> None:
        pidfd = os.pidfd_open(init_pid)
        try:
            super().run(pidfd, prober)
        finally:
            os.close(pidfd)
            for fd in self.clients:
                os.close(fd)


def forward_window_changes(caller: int, master: int) -> object:
    """Resize the container's pty whenever the caller's terminal is resized (SIGWINCH)."""
    copy_window_size(caller, master)
    return signal.signal(signal.SIGWINCH, lambda *_: copy_window_size(caller, master))
