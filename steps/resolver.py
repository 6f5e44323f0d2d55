"""The instance's resolver (steps/dns_server.py), seen from the steps: started with the first
bridged container, told which netns to serve, stopped with the last. Callers hold the
instance lock.

    RUN_ROOT/network/resolver.pid     {"pid", "start"}: the process, with its start time
    RUN_ROOT/network/resolver.sock    its commands: serve NAME, drop NAME, stop (root only)

The upstream nameservers are those of the host's resolv.conf (network.host_resolv_conf(),
DIY_DOCKER_RESOLV_CONF when set), read by the process from the host's netns.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

from steps import StepFailed, linux
from steps.facts import process_alive
from steps.names import resolver_dir

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dns_server.py")
PID_FILE = "resolver.pid"
SOCKET = "resolver.sock"
START_TIMEOUT = 10.0


def running(instance) -> int | None:
    """The resolver's pid when it runs (the pidfile's pid with its start time)."""
    try:
        with open(os.path.join(resolver_dir(instance), PID_FILE)) as f:
            rec = json.load(f)
        pid, start = int(rec["pid"]), int(rec["start"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if process_alive(pid, start) else None


_starting: dict[str, int] = {}  # network dir -> the read end of a starting resolver's readiness pipe


def start(instance) -> None:
    """Start the resolver, unless it runs, without waiting for it: the caller's own work (the
    bridge, the veth) overlaps the ~20 ms of its interpreter's start; ensure() then waits."""
    if running(instance) is None and resolver_dir(instance) not in _starting:
        _starting[resolver_dir(instance)] = spawn(instance, wait=False)


def ensure(instance) -> bool:
    """Start the resolver unless it runs (or wait for one start() began); True when it was
    started (it then serves every container holding a lease)."""
    pending = _starting.pop(resolver_dir(instance), None)
    if pending is not None:
        wait_ready(pending)
        return True
    if running(instance) is not None:
        return False
    spawn(instance)
    return True


def repair(instance) -> str:
    """For network.repair: the resolver running again (after a kill) while a container holds a
    lease, and stopped when none does. Takes the instance lock; says what it did."""
    from steps import ipam
    from steps.state import instance_lock

    with instance_lock(instance):
        if not ipam.anywhere(instance):
            stop(instance)
            return "no container holds a lease: no resolver"
        return "resolver started again" if ensure(instance) else f"resolver running (pid {running(instance)})"


def serve(instance, name: str) -> None:
    """The resolver answers in NAME's netns (started first when it is not running)."""
    ensure(instance)
    try:
        answer = command(instance, f"serve {name}")
    except OSError as e:
        answer = f"it does not answer ({e.strerror or e})"
    if answer != "ok":
        raise StepFailed(f"the instance's resolver cannot serve {name}: {answer}")


def drop(instance, name: str) -> None:
    """NAME's sockets closed (they hold its netns alive); nothing when the resolver is not running."""
    if running(instance) is not None:
        try:
            command(instance, f"drop {name}")
        except OSError:
            pass


def stop(instance) -> None:
    """The resolver gone, and its files (one still starting is waited for first: its pidfile and
    socket would otherwise come after this)."""
    pending = _starting.pop(resolver_dir(instance), None)
    if pending is not None:
        try:
            wait_ready(pending)
        except StepFailed:
            pass
    pid = running(instance)
    if pid is not None:
        try:
            command(instance, "stop", wait_exit=True)
        except OSError:
            pass
        deadline = time.monotonic() + 2
        while running(instance) == pid and time.monotonic() < deadline:
            time.sleep(0.005)
        if running(instance) == pid:
            os.kill(pid, signal.SIGKILL)
            while running(instance) == pid:
                time.sleep(0.005)
    for name in (PID_FILE, SOCKET, f"{PID_FILE}.tmp"):
        try:
            os.unlink(os.path.join(resolver_dir(instance), name))
        except FileNotFoundError:
            pass


def command(instance, line: str, wait_exit: bool = False) -> str:
    path = os.path.join(resolver_dir(instance), SOCKET)
    dir_fd = None
    if len(path) > 100:  # sockaddr_un holds 108 bytes: reach a long path through /proc
        dir_fd = os.open(resolver_dir(instance), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        path = f"/proc/self/fd/{dir_fd}/{SOCKET}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(path)
            s.sendall(line.encode() + b"\n")
            answer = b""
            while True:  # its reply, then (stop) EOF when it exits
                chunk = s.recv(512)
                answer += chunk
                if not chunk or (b"\n" in answer and not wait_exit):
                    break
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    return answer.decode(errors="replace").strip()


def spawn(instance, wait: bool = True) -> int | None:
    """Double fork, new session, exec a fresh interpreter (-I -S: no site, nothing of ours but
    dns_server.py), its stdio on /dev/null; wait until it serves every leased container (or,
    wait=False, return the readiness pipe's read end for wait_ready())."""
    from steps.network import host_resolv_conf

    net_dir = resolver_dir(instance)
    os.makedirs(net_dir, exist_ok=True)
    stop(instance)  # the files of a killed one
    r, w = os.pipe()
    os.set_inheritable(w, True)
    argv = [sys.executable, "-I", "-S", SERVER, net_dir, os.path.join(instance.run_root, "containers"),
            host_resolv_conf(), str(w)]

    def server() -> None:
        os.chdir("/")
        os.umask(0o077)  # its socket, pidfile and directory are root's alone from the start
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, w)  # nothing the caller inherited lives as long as the instance
        os.closerange(w + 1, 1 << 16)
        os.execve(sys.executable, argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"})

    linux.daemonize(server, r, w)
    if not wait:
        return r
    wait_ready(r)
    return None


def wait_ready(r: int) -> None:
    """Read the resolver's "ok" (it serves every leased container then), and close the pipe."""
    answer = b""
    try:
        import select

        deadline = time.monotonic() + START_TIMEOUT
        while b"\n" not in answer and time.monotonic() < deadline:
            if not select.select([r], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            chunk = os.read(r, 512)
            if not chunk:
                break
            answer += chunk
    finally:
        os.close(r)
    text = answer.decode(errors="replace").strip()
    if not text.startswith("ok"):
        raise StepFailed(f"the instance's resolver did not start: {text or 'no answer'}")
