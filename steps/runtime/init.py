"""What runs between fork and exec: the container's setup and its init (PID 1).

Fails closed: any error here is written to the error pipe and the process
exits; the command never runs half-isolated.

    monitor --fork--> setup: joins the cgroup, unshares the namespaces,
                      forks PID 1 of the new pid namespace, reports its pid, exits
    PID 1:            private mounts, lo up, hostname, /proc /dev /sys,
                      pivot_root, tty, workdir, waits for "go", execs
"""
from __future__ import annotations

import errno
import os
import signal

from steps import EXIT_DIY_FAILED, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, linux
from steps.volumes import resolve_in_root

NAMESPACES = linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWPID
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
           "urandom": (1, 9), "tty": (5, 0)}


class InitError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def fail(err_w: int, code: int, message: str) -> None:
    try:
        os.write(err_w, f"{code} {message}".encode(errors="replace")[:4000])
    finally:
        os._exit(code)


def reset_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ; ignored signals survive exec, so restore them."""
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def setup(plan: dict, err_w: int, pid_w: int, go_r: int) -> None:
    """The intermediate process; never returns."""
    try:
        from steps.cgroup import join

        reset_signals()
        join(plan["cgroup"], os.getpid())  # before any fork: every descendant is limited
        flags = NAMESPACES | (linux.CLONE_NEWCGROUP if os.path.exists("/proc/self/ns/cgroup") else 0)
        if plan["netns"]:  # the veth stage's pinned namespace, wired already
            os.close(linux.enter_netns(plan["netns"]))
        else:
            flags |= linux.CLONE_NEWNET
        linux.unshare(flags)
        pid = os.fork()
        if pid == 0:
            os.close(pid_w)
            container_init(plan, err_w, go_r)
        os.write(pid_w, f"{pid}\n".encode())
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - fail closed, whatever it was
        fail(err_w, EXIT_DIY_FAILED, f"cannot set up the container: {e}")


def container_init(plan: dict, err_w: int, go_r: int) -> None:
    """PID 1 of the container; never returns."""
    try:
        prepare_root(plan)
        if plan["tty"]:
            take_terminal()
        else:
            os.setpgid(0, 0)  # Ctrl-C at a terminal reaches the monitor, which forwards it
        enter_workdir(plan["workdir"], plan.get("user"))
        keep = {err_w, go_r}
        close_fds(keep)
        if os.read(go_r, 1) != b"g":
            os._exit(EXIT_DIY_FAILED)  # the monitor died before recording us: do not run
        os.close(go_r)
        execute(plan["argv"], plan["env"])
    except InitError as e:
        fail(err_w, e.code, str(e))
    except BaseException as e:  # noqa: BLE001
        fail(err_w, EXIT_DIY_FAILED, f"cannot start the container: {e}")


def prepare_root(plan: dict) -> None:
    # Our mounts must not propagate back to the host (mount_namespaces(7)).
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.link_up("lo")
    linux.sethostname(plan["hostname"])
    root = plan["rootfs"]
    mount_proc(root)
    mount_dev(root)
    bind_etc(root, plan["etc"])
    target = resolve_in_root(root, "/sys", create=True)
    linux.mount("sysfs", target, "sysfs", linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    pivot(root)


def mount_proc(root: str) -> None:
    target = resolve_in_root(root, "/proc", create=True)
    linux.mount("proc", target, "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)


def bind_etc(root: str, files: dict[str, str]) -> None:
    """The rendered hosts, hostname and resolv.conf over the image's (resolved inside root)."""
    for inside, source in files.items():
        try:
            target = resolve_in_root(root, inside, create=True, as_dir=False)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES):
                continue  # a read-only volume owns /etc: its files stand
            raise
        if os.path.isdir(target):
            continue  # an image with a directory there: leave it
        linux.mount(source, target, None, linux.MS_BIND)


def mount_dev(root: str) -> None:
    dev = resolve_in_root(root, "/dev", create=True)
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID | linux.MS_STRICTATIME, "mode=755,size=65536k")
    for name, (major, minor) in DEVICES.items():
        path = os.path.join(dev, name)
        os.mknod(path, 0o666 | 0o020000, os.makedev(major, minor))
        os.chmod(path, 0o666)
    os.mkdir(os.path.join(dev, "pts"), 0o755)
    linux.mount("devpts", os.path.join(dev, "pts"), "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    os.mkdir(os.path.join(dev, "shm"), 0o1777)
    linux.mount("shm", os.path.join(dev, "shm"), "tmpfs",
                linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC, "mode=1777,size=65536k")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))


def pivot(root: str) -> None:
    """pivot_root(".", ".") stacks the old root on top of the new one; detaching
    it leaves only the new root (pivot_root(2), NOTES: "new_root and put_old
    may be the same directory"). It avoids needing a put_old directory in the image."""
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")


def take_terminal() -> None:
    """Become the terminal's foreground process group, so Ctrl-C reaches the container."""
    os.setpgid(0, 0)
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(0, os.getpgrp())
    finally:
        signal.signal(signal.SIGTTOU, old)


def enter_workdir(workdir: str, user: dict | None) -> None:
    """Make a missing WorkingDir (as Docker does), become the user, then enter it."""
    os.makedirs(workdir, exist_ok=True)
    if user is not None:
        os.setgroups(user["groups"])
        os.setgid(user["gid"])
        os.setuid(user["uid"])
    os.chdir(workdir)


def close_fds(keep: set[int]) -> None:
    """The container inherits stdin, stdout and stderr only."""
    last = 3
    for fd in sorted(keep):
        os.closerange(last, fd)
        last = fd + 1
    os.closerange(last, os.sysconf("SC_OPEN_MAX"))


def execute(argv: list[str], env: dict[str, str]) -> None:
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        raise InitError(EXIT_NOT_FOUND, f"{argv[0]}: command not found in the container") from None
    except OSError as e:
        if e.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM):
            raise InitError(EXIT_NOT_EXECUTABLE, f"{argv[0]}: not executable: {e.strerror}") from None
        raise
