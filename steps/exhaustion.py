"""Resources that run out (disk, quota, open files, memory, processes): one line that says what
ran out, where, and while doing what - in place of "OSError: [Errno 28] ...".

The kernel's errno is the fact; the path it came with (or the one the caller names) tells
which file system ran out; `doing` is the caller's words ("unpacking layer sha256:...").
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager

from steps import DiyError

EXHAUSTED = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN})
MB = 1 << 20


class OutOf(DiyError):
    """A resource ran out; the line says which and where (Docker's 125)."""


def exhausted(e: BaseException) -> bool:
    """An error that says a resource ran out. (Python raises EAGAIN as BlockingIOError, a failed
    fork's too; the non-blocking calls whose EAGAIN means "not now" catch it where they are.)"""
    if isinstance(e, MemoryError):
        return True
    return isinstance(e, OSError) and e.errno in EXHAUSTED


def existing(path: str) -> str:
    """path, or its nearest ancestor that exists (what failed may not have been made)."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path.rstrip("/")) or "/"
    return path


def filesystem(path: str) -> str:
    """'<mount point> (<type>, <size>, <free> free)' of the file system holding path."""
    probe = existing(path)
    try:
        st, vfs = os.stat(probe), os.statvfs(probe)
    except OSError:
        return path
    point, kind = mount_of(probe, st.st_dev)
    size, free = vfs.f_blocks * vfs.f_frsize, vfs.f_bavail * vfs.f_frsize
    return f"{point} ({kind}, {megabytes(size)}, {megabytes(free)} free)"


def mount_of(path: str, dev: int) -> tuple[str, str]:
    """The mount point and file system type of the mount of device dev that holds path."""
    best, kind = "/", "?"
    want = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split(" ")
                point = fields[4].replace("\\040", " ")
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if fields[2] == want and inside and len(point) >= len(best):
                    best, kind = point, line.split(" - ", 1)[1].split(" ", 1)[0]
    except OSError:
        pass
    return best, kind


def megabytes(n: int) -> str:
    return f"{n / MB:.0f} MB" if n >= MB else f"{max(n, 0) // 1024} KB"


def free_bytes(path: str) -> int:
    try:
        vfs = os.statvfs(existing(path))
    except OSError:
        return 0
    return vfs.f_bavail * vfs.f_frsize


def what_ran_out(e: BaseException, path: str | None) -> str:
    """The first half of the line: what ran out, and where."""
    if isinstance(e, MemoryError) or e.errno == errno.ENOMEM:
        return "out of memory"
    where = path or getattr(e, "filename", None)
    if e.errno == errno.ENOSPC:
        return f"no space left on {filesystem(where) if where else 'the device'}"
    if e.errno == errno.EDQUOT:
        return f"disk quota exceeded on {filesystem(where) if where else 'the device'}"
    if e.errno == errno.EMFILE:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return f"too many open files in this process (its limit is {soft}: raise it with ulimit -n)"
    if e.errno == errno.ENFILE:
        return "too many open files on the host (raise sysctl fs.file-max)"
    return ("cannot create a process or thread (a limit on processes was reached: ulimit -u, "
            "sysctl kernel.pid_max or a pids cgroup)")


def explain(e: BaseException, doing: str, path: str | None = None, need: int = 0) -> OutOf:
    """The one line for e. need: the bytes the work takes in all, when known; the line then
    says about how much more space it needs than is free now (after our partial work went)."""
    line = f"{what_ran_out(e, path)} while {doing}"
    where = path or getattr(e, "filename", None)
    if need and where and getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        more = need - free_bytes(where)
        if more > 0:
            line += f" (needs about {megabytes(more)} more)"
    return OutOf(line)


@contextmanager
def doing(what: str, path: str | None = None):
    """Within the block, a resource running out becomes explain()'s one line."""
    try:
        yield
    except (OSError, MemoryError) as e:
        if not exhausted(e):
            raise
        raise explain(e, what, path) from None
