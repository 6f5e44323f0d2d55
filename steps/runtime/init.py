"""What runs between fork and exec: the container's setup and its init (PID 1).

Fails closed: any error here is written to the error pipe and the process
exits; the command never runs half-isolated. The order is the kernel's
(README "Confinement"; runc and crun keep the same one):

    monitor --fork--> setup: not dumpable, joins its cgroup in every hierarchy, enters
                      the pinned netns, unshares mount/uts/ipc/pid/cgroup namespaces
                      (the cgroup one once inside the cgroup), forks PID 1, exits
    PID 1:            a new session; lo up, hostname; the mounts and pivot_root
                      (rootfs.py); a fresh keyring, rlimits; its own pty; seccomp,
                      capabilities and user (confine.py); waits for "go", execs
"""
from __future__ import annotations

import errno
import os
import signal

from steps import EXIT_DIY_FAILED, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, linux
from steps.runtime import confine, rootfs, terminal  # now: after pivot_root nothing of the host can be imported

NAMESPACES = (linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWPID
              | linux.CLONE_NEWCGROUP)


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


def setup(plan: dict, fds: dict) -> None:
    """The intermediate process; never returns. fds: stdio (three fds), err_w, pid_w, go_r, console."""
    err_w = fds["err_w"]
    try:
        from steps.cgroup import join

        # Not dumpable before any namespace is entered: nothing inside can ptrace us or open
        # our /proc/PID/exe or fds (CVE-2019-5736); exec makes the command dumpable again.
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        reset_signals()
        for target, fd in enumerate(fds["stdio"]):
            os.dup2(fd, target)
        join(plan["cgroup"], os.getpid())  # every hierarchy, before any fork: every descendant is in
        flags = NAMESPACES
        if plan["netns"]:  # the veth stage's pinned namespace, wired already
            os.close(linux.enter_netns(plan["netns"]))
        elif not plan.get("host_network"):  # --network host stays in ours
            flags |= linux.CLONE_NEWNET
        linux.unshare(flags)  # the cgroup namespace is rooted at the cgroups just joined
        pid = os.fork()
        if pid == 0:
            os.close(fds["pid_w"])
            container_init(plan, err_w, fds["go_r"], fds["console"])
        os.write(fds["pid_w"], f"{pid}\n".encode())
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - fail closed, whatever it was
        fail(err_w, EXIT_DIY_FAILED, f"cannot set up the container: {e}")


def container_init(plan: dict, err_w: int, go_r: int, console: int) -> None:
    """PID 1 of the container; never returns."""
    try:
        os.setsid()  # no controlling terminal: never the caller's
        if not plan.get("host_network"):  # the host's lo is not ours to touch
            linux.link_up("lo")
        linux.sethostname(plan["hostname"])
        rootfs.prepare(plan)
        confine.isolate_session(plan["rlimits"])
        if plan["tty"]:
            take_own_terminal(console, plan["user"]["uid"])
        os.close(console)
        os.makedirs(plan["workdir"], exist_ok=True)  # a missing WorkingDir is made, as Docker does
        confine.before_privileges_drop(plan)
        confine.drop_privileges(plan)
        os.chdir(plan["workdir"])
        close_fds({err_w, go_r})
        if os.read(go_r, 1) != b"g":
            os._exit(EXIT_DIY_FAILED)  # the monitor died before recording us: do not run
        os.close(go_r)
        confine.just_before_exec(plan)
        execute(plan["argv"], plan["env"])
    except InitError as e:
        fail(err_w, e.code, str(e))
    except BaseException as e:  # noqa: BLE001
        fail(err_w, EXIT_DIY_FAILED, f"cannot start the container: {e}")


def take_own_terminal(console: int, uid: int) -> None:
    """A pty of the container's devpts: the master goes to the monitor, the slave is ours."""
    master, slave = terminal.open_container_pty()
    terminal.send_fd(console, master)
    os.close(master)
    terminal.make_controlling(slave, uid)


def close_fds(keep: set[int]) -> None:
    """The container inherits stdin, stdout and stderr only."""
    last = 3
    for fd in sorted(keep):
        os.closerange(last, fd)
        last = fd + 1
    os.closerange(last, 0x7FFFFFFF)


def execute(argv: list[str], env: dict[str, str]) -> None:
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        raise InitError(EXIT_NOT_FOUND, f"{argv[0]}: command not found in the container") from None
    except OSError as e:
        if e.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM):
            raise InitError(EXIT_NOT_EXECUTABLE, f"{argv[0]}: not executable: {e.strerror}") from None
        raise
