"""What runs between fork and exec for `exec`: a process joins a running container.

Fails closed, as the init does: any error is written to the error pipe and the process exits;
the command never runs half-joined. The order (runc's setns init keeps the same one):

    exec --fork--> join:    not dumpable; the container's cgroup in every hierarchy; the init's
                            ipc, uts, net, cgroup, pid and mount namespaces (setns(2)); forks,
                            writes the child's pid, exits
    the process:            (a pid of the container's pid namespace, never PID 1) a new session;
                            a fresh keyring, rlimits; a pty of the container's devpts (--tty);
                            seccomp, capabilities and user (confine.py); workdir; execs
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import termios

from steps import EXIT_DIY_FAILED, faults, linux
from steps.cgroup import join as join_cgroup
from steps.facts import parse_stat
from steps.runtime import confine, terminal  # now: after setns(mnt) nothing of the host can be imported
from steps.runtime.init import InitError, close_fds, execute, fail, reset_signals

# The mount namespace last: once in it, /proc and every path are the container's. Joining a pid
# namespace changes only where the caller's children are placed, not the caller (setns(2)):
# hence the fork, and the command is never PID 1.
NAMESPACES = (("ipc", linux.CLONE_NEWIPC), ("uts", linux.CLONE_NEWUTS), ("net", linux.CLONE_NEWNET),
              ("cgroup", linux.CLONE_NEWCGROUP), ("pid", linux.CLONE_NEWPID), ("mnt", linux.CLONE_NEWNS))


def join(plan: dict, fds: dict) -> None:
    """The joining process; never returns. fds: stdio (three fds), err_w, pid_w, console."""
    err_w, pid_w = fds["err_w"], fds["pid_w"]
    try:
        # Not dumpable before anything of the container is joined: nothing inside can ptrace us
        # or open our /proc/PID/exe (the host's python) or fds (CVE-2019-5736); exec resets it.
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        reset_signals()
        for target, fd in enumerate(fds["stdio"]):
            os.dup2(fd, target)
        close_fds({err_w, pid_w, fds["console"]})  # no host fd reaches the container (CVE-2024-21626)
        join_cgroup(plan["cgroup"], os.getpid())  # host paths: before the mount namespace
        enter_namespaces(plan["init_pid"], plan["init_start"])
        faults.point("exec.join.joined")
        pid = os.fork()
        if pid == 0:
            os.close(pid_w)
            process(plan, err_w, fds["console"])
        os.write(pid_w, f"{pid}\n".encode())
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - fail closed, whatever it was
        fail(err_w, EXIT_DIY_FAILED, f"cannot exec in {plan['name']}: {e}")


def open_namespaces(init_pid: int, init_start: int) -> list[tuple[int, int]]:
    """(fd, nstype) of each namespace of the init. Through a /proc/PID directory fd that is
    checked first: it stays bound to that process, so a recycled pid cannot slip in (proc(5))."""
    try:
        proc = os.open(f"/proc/{init_pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OSError(errno.ESRCH, "it is not running") from None
    opened: list[tuple[int, int]] = []
    try:
        with open(os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)) as f:
            if parse_stat(f.read())[1] != init_start:
                raise OSError(errno.ESRCH, "it is not running (its init is gone)")
        for name, nstype in NAMESPACES:
            opened.append((os.open(f"ns/{name}", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc), nstype))
        opened.append((os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc), 0))
    except BaseException:
        for fd, _ in opened:
            os.close(fd)
        raise
    finally:
        os.close(proc)
    return opened


def enter_namespaces(init_pid: int, init_start: int) -> None:
    """setns(2) into each namespace of the init, then check where the kernel put us."""
    opened = open_namespaces(init_pid, init_start)
    root = opened.pop()[0]
    try:
        for fd, nstype in opened:
            linux.setns(fd, nstype)
        # Joining a mount namespace sets root and cwd to that namespace's root, whatever is
        # mounted over it (fs/namespace.c mntns_install): the container's pivot_root'ed rootfs.
        # Make sure it is the init's root; a chroot'ed init would leave us elsewhere: refuse.
        here, there = os.stat("/"), os.fstat(root)
        if (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino):
            raise OSError(errno.EXDEV, "its init's root is not its mount namespace's root")
    finally:
        for fd in [root] + [fd for fd, _ in opened]:
            os.close(fd)


def process(plan: dict, err_w: int, console: int) -> None:
    """The process that execs the command, in the container's pid namespace; never returns."""
    try:
        if plan["detach"] and os.fork():
            os._exit(0)  # the command's parent leaves at once: it is reparented to the container's init
        if plan["detach"]:
            announce(console)
        os.setsid()  # no controlling terminal: never the caller's
        confine.isolate_session(plan["rlimits"])
        if plan["tty"]:
            own_terminal(console, plan["user"]["uid"], plan["winsize"])
        os.close(console)
        close_fds({err_w})
        confine.before_privileges_drop(plan)
        confine.drop_privileges(plan)
        try:
            os.chdir(plan["workdir"])  # as the user: a directory it may not enter is refused
        except OSError as e:
            raise InitError(EXIT_DIY_FAILED, f"cannot exec in {plan['name']}: workdir {plan['workdir']}: "
                                             f"{e.strerror}") from None
        confine.just_before_exec(plan)
        faults.point("exec.process.before_exec")
        execute(plan["argv"], plan["env"])
    except InitError as e:
        fail(err_w, e.code, str(e))
    except BaseException as e:  # noqa: BLE001
        fail(err_w, EXIT_DIY_FAILED, f"cannot exec in {plan['name']}: {e}")


def announce(sock: int) -> None:
    """Tell the caller our pid. A pid from os.getpid() here is the container's; sent over a unix
    socket, the kernel passes it as the caller sees it (SCM_CREDENTIALS, unix(7))."""
    with socket.socket(fileno=os.dup(sock)) as s:
        s.sendall(b"p")


def own_terminal(console: int, uid: int, winsize: bytes | None) -> None:
    """A pty of the container's own devpts instance. /dev/pts/ptmx, not the /dev/ptmx link the
    container may have replaced: /dev/pts is a mount point, which nothing inside can swap
    without CAP_SYS_ADMIN."""
    master, slave = terminal.open_container_pty("/dev/pts/ptmx")
    if winsize:  # the caller's, before the command runs: `stty size` must see it at once
        fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)
    terminal.send_fd(console, master)
    os.close(master)
    terminal.make_controlling(slave, uid)
