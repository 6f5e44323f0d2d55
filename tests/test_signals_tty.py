"""The foreground run: signals, Ctrl-C, and an interactive shell on a terminal."""
from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

from tests.conftest import REPO


def wait_for(proc_or_pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc_or_pred():
            return True
        time.sleep(0.05)
    return False


def running(inst, name):
    p = inst.cli("ps", "--json")
    return p.returncode == 0 and f'"{name}"' in p.stdout and '"running"' in p.stdout


def test_sigint_ends_a_pid1_without_handler(inst):
    proc = inst.popen("run", "--name", "int1", "--rm", "--", "/bin/sleep", "1000")
    assert wait_for(lambda: running(inst, "int1"))
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert time.monotonic() - start < 5, "Ctrl-C of a non-interactive run hung"
    assert proc.returncode == 137, err  # forwarded as SIGKILL: sleep as PID 1 ignores SIGINT
    assert inst.containers() == []


def test_sigint_and_sigterm_reach_a_handler(inst):
    for sig, code in ((signal.SIGINT, 5), (signal.SIGTERM, 6)):
        script = f'trap "echo got; exit {code}" {sig.name[3:]}; echo ready; while :; do sleep 0.1; done'
        proc = inst.popen("run", "--name", "trap", "--rm", "--", "/bin/sh", "-c", script)
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == code, err
        assert out.strip() == "got"
        assert inst.containers() == []


def test_stop_from_another_terminal_ends_a_foreground_run(inst):
    proc = inst.popen("run", "--name", "fg", "--", "/bin/sleep", "1000")
    assert wait_for(lambda: running(inst, "fg"))
    inst.cli("stop", "fg", check=True)
    proc.communicate(timeout=20)
    assert proc.returncode == 137
    assert "Exited (137)" in inst.cli("ps", "--all", check=True).stdout
    inst.cli("rm", "fg", check=True)


class Terminal:
    """diy-docker under a pseudo-terminal, as at an interactive shell."""

    def __init__(self, inst, *args):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(REPO)
            os.execve(sys.executable, [sys.executable, "-m", "invoke", *args], inst.env)
        self.buf = b""

    def expect(self, text: bytes, timeout: float = 15) -> bytes:
        deadline = time.monotonic() + timeout
        while text not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"did not see {text!r} in {self.buf!r}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed before {text!r}: {self.buf!r}")
                self.buf += chunk
        before, _, self.buf = self.buf.partition(text)
        return before

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def exit_code(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if select.select([self.fd], [], [], 0.1)[0]:
                    os.read(self.fd, 4096)
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        raise AssertionError("the terminal session did not end")


def test_interactive_shell(inst):
    term = Terminal(inst, "run", "--name", "shell", "--rm", "--interactive", "--tty", "--", "/bin/sh")
    term.send(b'echo "pid=$$ host=$(hostname)"\n')
    term.expect(b"pid=1 host=shell")
    term.send(b"sleep 100\n")
    time.sleep(0.5)
    term.send(b"\x03")  # Ctrl-C: reaches the shell's job, not diy-docker
    term.send(b"echo still-$((20+22))\n")
    term.expect(b"still-42")
    term.send(b"exit 7\n")
    assert term.exit_code() == 7
    assert inst.containers() == []
