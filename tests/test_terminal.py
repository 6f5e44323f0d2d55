"""The caller's terminal under attack, and the container's own terminal (--interactive --tty).

Everything runs under a real pty (os.openpty, the pty as the controlling terminal of a new session),
as at a user's interactive shell. The TIOCSTI tests run a real interactive host shell (bash) that starts
a foreground container whose probe pushes `touch /tmp/<marker>` into every terminal it can reach: had
one of them been the caller's, the shell would run it on the host as soon as the container exits.
"""
from __future__ import annotations

import fcntl
import os
import re
import select
import shutil
import signal
import struct
import sys
import termios
import time
import uuid

import pytest

from tests.conftest import REPO
from tests.probes import (  # noqa: F401 - the two *_fixture names are the fixtures probe_build and probes
    IMAGE,
    Probes,
    probe_build_fixture,
    probes_fixture,
)
from tests.test_signals_tty import wait_for

INVOKE = [sys.executable, "-m", "invoke"]


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Pty:
    """argv under a new pty as its controlling terminal (a session of its own), cwd the repository."""

    def __init__(self, argv: list[str], env: dict[str, str], rows: int = 24, cols: int = 80):
        self.master, slave = os.openpty()
        set_window_size(self.master, rows, cols)
        self.modes_before = termios.tcgetattr(self.master)  # the slave's modes, read through the master
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(self.master)
                os.setsid()
                fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
                for fd in (0, 1, 2):
                    os.dup2(slave, fd)
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                os.chdir(REPO)
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        os.close(slave)
        self.buf = b""
        self.seen = b""  # everything read, for failure messages
        self.code: int | None = None

    def read_some(self, timeout: float) -> bool:
        if not select.select([self.master], [], [], timeout)[0]:
            return True
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: every slave fd is closed
            chunk = b""
        self.buf += chunk
        self.seen += chunk
        return bool(chunk)

    def expect(self, pattern: bytes, timeout: float = 20) -> re.Match:
        """Wait for the regular expression; consume the output up to its end."""
        deadline = time.monotonic() + timeout
        while not (m := re.search(pattern, self.buf)):
            left = deadline - time.monotonic()
            assert left > 0, f"did not see {pattern!r} in:\n{self.seen.decode(errors='replace')}"
            assert self.read_some(left), f"terminal closed before {pattern!r}:\n{self.seen.decode(errors='replace')}"
        self.buf = self.buf[m.end():]
        return m

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def modes(self) -> list:
        return termios.tcgetattr(self.master)

    def wait(self, timeout: float = 20) -> int:
        """The exit code (128+N for a signal), reading the output meanwhile."""
        deadline = time.monotonic() + timeout
        while self.code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.read_some(0)
                self.code = os.waitstatus_to_exitcode(status)
                if self.code < 0:
                    self.code = 128 - self.code
                break
            assert time.monotonic() < deadline, f"did not end:\n{self.seen.decode(errors='replace')}"
            self.read_some(0.05)
        return self.code

    def close(self) -> None:
        """End the session if it still runs (SIGHUP to its group, then SIGKILL), close the master."""
        if self.code is None:
            for sig in (signal.SIGHUP, signal.SIGKILL):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    self.wait(timeout=5)
                    break
                except AssertionError:
                    continue
        os.close(self.master)


def raw(modes: list) -> bool:
    return not modes[3] & (termios.ICANON | termios.ECHO | termios.ISIG)


# --- TIOCSTI: the caller's shell must never run what a container pushes -------------------------------


@pytest.mark.parametrize("flags", [[], ["--interactive", "--tty"]], ids=["plain", "interactive-tty"])
def test_tiocsti_never_reaches_the_callers_shell(inst, probes: Probes, flags: list[str]):
    shell = shutil.which("bash")
    if not shell:
        pytest.skip("bash is missing")
    marker = f"/tmp/diyt-{inst.id}-tiocsti-{uuid.uuid4().hex[:8]}"
    env = {**inst.env, "PS1": "host$ ", "HISTFILE": "/dev/null", "TERM": "dumb"}
    term = Pty([shell, "--norc", "--noprofile", "-i"], env)
    try:
        term.send(b"echo shell-$((6*7))\n")
        term.expect(rb"shell-42")
        command = [*INVOKE, "run", "--rm", "--image", IMAGE, "--network", "none", *flags, "--",
                   "/probe", "tiocsti", marker]
        term.send(" ".join(command).encode() + b"; echo probe-exit-$?\n")
        report = term.expect(rb"probe-exit-(\d+)", timeout=60)
        output = term.seen.decode(errors="replace")
        term.send(b"echo after-$((40+2))\n")  # whatever was pushed is read by the shell before this
        term.expect(rb"after-42")
        assert not os.path.exists(marker), f"the container's TIOCSTI ran a command on the host:\n{output}"
        assert report.group(1) in (b"0", b"1"), f"the probe did not run:\n{output}"
        assert "ESCAPED" not in output, output
        if not flags:  # no terminal of its own: nothing it holds is a terminal it may push into
            assert "ALLOWED: TIOCSTI" not in output, output
        term.send(b"exit 0\n")
        assert term.wait() == 0
    finally:
        term.close()
        if os.path.exists(marker):
            os.unlink(marker)


# --- the container's own terminal ---------------------------------------------------------------------


def test_interactive_tty_is_the_containers_own_pty(inst, probes: Probes):
    term = Pty([*INVOKE, "run", "--rm", "--interactive", "--tty", "--image", IMAGE, "--network", "none", "--",
                "/bin/sh", "-c", "test -t 0 && test -t 1 && test -t 2 && echo all-ttys; /probe tty"], inst.env)
    try:
        assert term.wait(timeout=60) == 0, term.seen
    finally:
        term.close()
    out = term.seen.decode(errors="replace")
    assert "all-ttys" in out, out
    for fd in (0, 1, 2):
        assert re.search(rf"INFO: fd{fd}=tty path=/dev/pts/\d+ own-devpts=yes", out), out


def test_without_interactive_stdin_is_dev_null(inst, probes: Probes):
    term = Pty([*INVOKE, "run", "--rm", "--image", IMAGE, "--network", "none", "--", "/probe", "fds"], inst.env)
    try:
        assert term.wait(timeout=60) == 0, term.seen
    finally:
        term.close()
    assert "INFO: fd0=/dev/null" in term.seen.decode(errors="replace"), term.seen


def test_interactive_keeps_stdin_open(inst):
    p = inst.cli("run", "--rm", "--interactive", "--network", "none", "--", "/bin/cat", input="hello-stdin\n")
    assert p.returncode == 0 and p.stdout == "hello-stdin\n", p.stderr
    p = inst.cli("run", "--rm", "--network", "none", "--", "/bin/cat", input="hello-stdin\n")
    assert p.returncode == 0 and p.stdout == "", p.stderr  # without it: /dev/null


def running(inst, name: str) -> bool:
    p = inst.cli("ps", "--json")
    return p.returncode == 0 and f'"{name}"' in p.stdout and '"running"' in p.stdout


def test_ctrl_c_reaches_the_containers_foreground_group(inst):
    """As `docker run -it`: Ctrl-C is a byte to the container's own pty, whose line discipline sends
    SIGINT to the container's foreground group; a shell's job dies of it (130)."""
    term = Pty([*INVOKE, "run", "--rm", "--name", "cc", "--interactive", "--tty", "--network", "none", "--",
                "/bin/sh", "-c", "sleep 100; echo after"], inst.env)
    try:
        assert wait_for(lambda: running(inst, "cc") and raw(term.modes()), timeout=30), term.seen
        time.sleep(0.3)  # the shell has started its sleep
        start = time.monotonic()
        term.send(b"\x03")
        code = term.wait(timeout=15)
        assert time.monotonic() - start < 5, "Ctrl-C of an interactive run took too long"
        assert code == 130, term.seen
    finally:
        term.close()
    assert inst.containers() == []


def test_ctrl_c_to_a_pid1_without_handler_is_ignored_as_in_docker(inst):
    """PID 1 of a pid namespace ignores a signal it has no handler for, whoever sends it (pid_namespaces(7));
    `docker run -it busybox sleep 100` ignores Ctrl-C the same way. `stop` still ends it."""
    term = Pty([*INVOKE, "run", "--rm", "--name", "cc1", "--interactive", "--tty", "--network", "none", "--",
                "/bin/sleep", "100"], inst.env)
    try:
        assert wait_for(lambda: running(inst, "cc1") and raw(term.modes()), timeout=30), term.seen
        term.send(b"\x03")
        time.sleep(1)
        assert running(inst, "cc1")
        inst.cli("stop", "--time", "1", "cc1", check=True)
        assert term.wait(timeout=15) == 137
    finally:
        term.close()
    assert inst.containers() == []


def test_window_size_follows_the_callers_terminal(inst):
    term = Pty([*INVOKE, "run", "--rm", "--interactive", "--tty", "--network", "none", "--", "/bin/sh"],
               inst.env, rows=20, cols=70)
    try:
        term.send(b"echo ready-$((1+1))\n")
        term.expect(rb"ready-2")
        term.send(b"stty size\n")
        term.expect(rb"\b20 70\b")
        set_window_size(term.master, 33, 111)  # the kernel signals the foreground group; so do we
        os.kill(term.pid, signal.SIGWINCH)
        time.sleep(0.3)
        term.send(b"stty size\n")
        term.expect(rb"\b33 111\b")
        term.send(b"exit 3\n")
        assert term.wait() == 3
    finally:
        term.close()


def test_terminal_modes_are_restored(inst):
    term = Pty([*INVOKE, "run", "--rm", "--interactive", "--tty", "--network", "none", "--", "/bin/sh"], inst.env)
    try:
        term.send(b"echo ready-$((1+1))\n")
        term.expect(rb"ready-2")
        assert raw(term.modes()), "the caller's terminal is not in raw mode while the container runs"
        term.send(b"stty -echo; exit 0\n")  # the container changes its own modes: never the caller's
        assert term.wait() == 0
        assert term.modes() == term.modes_before
    finally:
        term.close()
