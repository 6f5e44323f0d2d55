"""`cp`: files and directories between the host and a container, as `docker cp` does.

    cp CONTAINER:SRC HOSTDST      cp HOSTSRC CONTAINER:DST      (SRC/. copies SRC's contents)

The container's side is its rootfs as mounted on the host (merged, with its volumes): a running
container's own mount, or, for a stopped one, the layers and volumes stages applied for the copy
and undone after it, under the container's lock. A path inside the container is resolved as the
container would see it (symlinks relative to its root, never the host's; steps.volumes
resolve_in_root), the directory reached is checked through /proc/self/fd to lie inside merged,
and from there every file is opened relative to its directory's fd with O_NOFOLLOW: a running
container that swaps a component for a symlink meanwhile makes the copy fail, never escape.
Owners: files written into the container belong to root, files written out to the caller (as
Docker's cp without -a); modes and mtimes are kept, setuid/setgid bits dropped on the way out.
"""
from __future__ import annotations

import os
import stat
import sys
from contextlib import contextmanager

from steps import BadInput, DiyError, config
from steps.names import Names

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def split_arg(arg: str) -> tuple[str | None, str]:
    """Docker's rule: an absolute path or one starting with '.' is local; else CONTAINER:PATH."""
    if not arg or "\0" in arg:
        raise BadInput(f"bad cp path {arg!r}: give CONTAINER:PATH or a host path, e.g. web:/etc/hosts")
    if arg.startswith("/") or arg.startswith(".") or ":" not in arg:
        return None, arg
    ref, _, path = arg.partition(":")
    if not path:
        raise BadInput(f"bad cp path {arg!r}: give a path after the container, e.g. {ref}:/tmp")
    return ref, path


def inside_parts(path: str, workdir: str) -> list[str]:
    """A container path as components from its root; '..' may not climb above the root."""
    full = path if path.startswith("/") else os.path.join(workdir or "/", path)
    parts: list[str] = []
    for p in full.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if not parts:
                raise BadInput(f"bad cp path {path!r}: '..' climbs above the container's root")
            parts.pop()
        else:
            parts.append(p)
    return parts


class Side:
    """One end of the copy: a directory fd and the entry name in it (None: the directory itself)."""

    def __init__(self, dir_fd: int, name: str | None, shown: str, contents: bool, slash: bool):
        self.dir_fd, self.name, self.shown = dir_fd, name, shown
        self.contents, self.slash = contents, slash  # SRC/. and a trailing '/'

    def lstat(self) -> os.stat_result | None:
        try:
            return os.stat(self.name or ".", dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None


def open_inside(root: str, parts: list[str], shown: str) -> int:
    """A directory fd of parts resolved inside root, checked to be root or below it."""
    from steps.volumes import resolve_in_root

    try:
        host = resolve_in_root(root, "/" + "/".join(parts))
    except DiyError as e:
        raise DiyError(f"cannot copy {shown}: {e}") from None
    if host is None:
        raise DiyError(f"cannot copy {shown}: no such directory in the container")
    try:
        fd = os.open(host, _DIR)
    except OSError as e:
        raise DiyError(f"cannot copy {shown}: {e.strerror}") from None
    real, top = os.readlink(f"/proc/self/fd/{fd}"), os.path.realpath(root)
    if real != top and not real.startswith(top + "/"):
        os.close(fd)
        raise DiyError(f"cannot copy {shown}: it resolves to {real}, outside the container")
    return fd


def locate(root: str | None, path: str, shown: str, workdir: str = "/") -> Side:
    """The Side of path: in the container when root is its merged dir, else on the host."""
    contents = path.endswith("/.") or path == "."
    slash = path.endswith("/") or contents
    if root is None:
        full = os.path.abspath(path)
        parent, name = (full, None) if contents else os.path.split(full)
        try:
            fd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise DiyError(f"cannot copy {shown}: {parent}: {e.strerror}") from None
        return Side(fd, name or None, shown, contents, slash)
    parts = inside_parts(path, workdir)
    if contents or not parts:
        return Side(open_inside(root, parts, shown), None, shown, True, True)
    return Side(open_inside(root, parts[:-1], shown), parts[-1], shown, False, slash)


def copy_tree(src_fd: int, name: str, dst_fd: int, dst_name: str, outward: bool) -> None:
    """Copy one entry (recursively) from src_fd/name to dst_fd/dst_name, never following a link."""
    st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
    mode = stat.S_IMODE(st.st_mode) & (0o1777 if outward else 0o7777)
    if stat.S_ISDIR(st.st_mode):
        if not _is_dir(dst_fd, dst_name):
            _clear(dst_fd, dst_name)
            os.mkdir(dst_name, 0o700, dir_fd=dst_fd)
        sfd = os.open(name, _DIR, dir_fd=src_fd)
        dfd = os.open(dst_name, _DIR, dir_fd=dst_fd)
        try:
            for child in sorted(os.listdir(sfd)):
                copy_tree(sfd, child, dfd, child, outward)
            os.chmod(dfd, mode)
            os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(sfd)
            os.close(dfd)
    elif stat.S_ISREG(st.st_mode):
        copy_file(src_fd, name, dst_fd, dst_name, mode, st)
    elif stat.S_ISLNK(st.st_mode):
        target = os.readlink(name, dir_fd=src_fd)
        _clear(dst_fd, dst_name)
        os.symlink(target, dst_name, dir_fd=dst_fd)
        os.utime(dst_name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_fd, follow_symlinks=False)
    else:  # devices, fifos, sockets: not data, and a device node must not appear on the host
        print(f"diy-docker: skipped {name}: not a regular file, directory or symlink", file=sys.stderr)


def copy_file(src_fd: int, name: str, dst_fd: int, dst_name: str, mode: int, st: os.stat_result) -> None:
    # O_NONBLOCK: a running container may swap the file for a FIFO after our lstat; opening that
    # would block forever, with the container's lock held. Regular files ignore the flag.
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=src_fd)
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            raise DiyError(f"cannot copy {name}: it is no longer a regular file (changed while copying)")
        _clear(dst_fd, dst_name, keep_file=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        dst = os.open(dst_name, flags, 0o600, dir_fd=dst_fd)
        try:
            if not stat.S_ISREG(os.fstat(dst).st_mode):
                raise DiyError(f"cannot copy {name}: the destination {dst_name} is not a regular file")
            while os.sendfile(dst, src, None, 1 << 20):
                pass
            os.fchmod(dst, mode)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _is_dir(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _clear(dir_fd: int, name: str, keep_file: bool = False) -> None:
    """Remove a non-directory entry in the way (a symlink is replaced, never followed)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise DiyError(f"cannot copy to {name}: a directory is in the way")
    if not (keep_file and stat.S_ISREG(st.st_mode)):
        os.unlink(name, dir_fd=dir_fd)


def transfer(src: Side, dst: Side, outward: bool) -> None:
    """docker cp's destination rules: into an existing directory, else as the named entry."""
    sst, dstat = src.lstat(), dst.lstat()
    if sst is None:
        raise DiyError(f"cannot copy {src.shown}: no such file or directory")
    src_dir = stat.S_ISDIR(sst.st_mode)
    if src.slash and not src_dir:
        raise DiyError(f"cannot copy {src.shown}: not a directory")
    dst_is_dir = dstat is not None and stat.S_ISDIR(dstat.st_mode)
    if dstat is None and dst.slash and not src_dir:
        raise DiyError(f"cannot copy to {dst.shown}: no such directory")
    if dstat is not None and not dst_is_dir and src_dir:
        raise DiyError(f"cannot copy the directory {src.shown} to the file {dst.shown}")
    if dst.name is None:
        dst_fd, dst_name = dst.dir_fd, "."
    else:
        dst_fd, dst_name = dst.dir_fd, dst.name
    if src.name is None or (src_dir and src.contents):
        sfd = os.open(src.name or ".", _DIR, dir_fd=src.dir_fd)
        base = _subdir(dst_fd, dst_name, create=dstat is None)
        try:
            for child in sorted(os.listdir(sfd)):
                copy_tree(sfd, child, base, child, outward)
        finally:
            os.close(sfd)
            os.close(base)
        return
    if dst_is_dir:
        base = _subdir(dst_fd, dst_name, create=False)
        try:
            copy_tree(src.dir_fd, src.name, base, src.name, outward)
        finally:
            os.close(base)
        return
    copy_tree(src.dir_fd, src.name, dst_fd, dst_name, outward)


def _subdir(dir_fd: int, name: str, create: bool) -> int:
    if create:
        os.mkdir(name, 0o755, dir_fd=dir_fd)
    return os.open(name, _DIR, dir_fd=dir_fd)


def cp(src: str, dst: str) -> int:
    """Copy between the host and a container (one side must be CONTAINER:PATH)."""
    (src_ref, src_path), (dst_ref, dst_path) = split_arg(src), split_arg(dst)
    if (src_ref is None) == (dst_ref is None):
        raise BadInput(f"bad cp {src!r} {dst!r}: exactly one side must be CONTAINER:PATH, "
                       "e.g. cp web:/etc/hosts ./hosts or cp ./conf web:/etc/app/")
    names = container(src_ref or dst_ref)
    with rootfs(names) as (root, workdir):
        outward = src_ref is not None
        source = locate(root if outward else None, src_path, src, workdir)
        try:
            target = locate(None if outward else root, dst_path, dst, workdir)
            try:
                transfer(source, target, outward)
            except OSError as e:
                raise DiyError(f"cannot copy {src} to {dst}: {e.strerror or e}") from None
            finally:
                os.close(target.dir_fd)
        finally:
            os.close(source.dir_fd)
    return 0


def container(ref: str) -> Names:
    from steps.state import existing_container

    return existing_container(config.load(), ref)[0]


@contextmanager
def rootfs(names: Names):
    """(merged, workdir) for the copy, under the container's lock: a running container's own
    mounts, else its layers and volumes mounted for the copy and undone after it."""
    from steps.cli.containers import restarting, running_pid, settled
    from steps.layers import LayersStep
    from steps.pipeline import Context
    from steps.state import load_record
    from steps.volumes import VolumesStep

    with settled(names):
        record = load_record(names)
        if record is None:
            raise DiyError(f"no such container: {names.container}")
        workdir = record.get("workdir") or "/"
        if running_pid(names, with_monitor=False) or restarting(names):  # its monitor owns the mounts
            yield names.merged, workdir
            return
        ctx = Context(names.instance, names, record, attach=False)
        applied = []
        try:
            for step in (LayersStep(ctx), VolumesStep(ctx)):
                if step.check().applied:
                    continue  # mounted already (a stop half done): not ours to undo
                applied.append(step)
                step.apply()
            yield names.merged, workdir
        finally:
            for step in reversed(applied):
                step.undo()
