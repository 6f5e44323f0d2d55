"""A new volume filled from the image, as Docker does: what the image has at the mount point
is copied into the empty volume with its owners, modes, times, xattrs, hard links,
symlinks (as they are, never followed), device nodes and FIFOs.

The source is a directory of the container's rootfs, already resolved inside it
(steps.volumes.resolve_in_root). The walk uses lstat only and never descends through a
symlink or into another mount, so nothing outside that directory is read.

The copy is made in a staging directory beside _data that no container sees, and only then
moved into the volume, entry by entry, by renames between directory fds. A volume may already
be mounted, writable, in another running container: copying into it by path would let that
container swap a directory we just made for a symlink to the host and have us write, chmod,
mknod or link there (a path is followed at every component, O_NOFOLLOW guards the last one only).
"""
from __future__ import annotations

import os
import stat

from steps.facts import mounts_below


def is_empty(path: str) -> bool:
    with os.scandir(path) as it:
        return next(it, None) is None


def clear(path: str) -> None:
    """Everything inside path removed (links removed, never followed); path itself stays."""
    import shutil

    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def fill(src: str, dst: str, staging: str) -> None:
    """Copy src's content into dst (an empty directory) through staging (made here, removed after);
    dst takes src's owner and mode too."""
    skip = {m.mount_point for m in mounts_below(src)}  # other volumes bound in the image path
    links: dict[tuple[int, int], str] = {}
    os.mkdir(staging, 0o700)
    copy_tree(src, staging, skip, links)
    publish(staging, dst)
    copy_attrs(os.lstat(src), src, dst)  # dst itself is ours: a container cannot replace its mount root
    remove_staging(staging)


def publish(staging: str, dst: str) -> None:
    """Each top entry renamed from staging into dst, both held open: only names inside the two
    directories are looked up. What a container sharing the volume made meanwhile is kept."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    src_fd, dst_fd = os.open(staging, flags), os.open(dst, flags)
    try:
        for name in sorted(os.listdir(src_fd)):
            try:
                os.lstat(name, dir_fd=dst_fd)
                continue  # written there meanwhile by a container that has the volume already
            except FileNotFoundError:
                os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    finally:
        os.close(src_fd)
        os.close(dst_fd)


def remove_staging(staging: str) -> None:
    """The staging directory and what was not moved; gone already is fine."""
    import shutil

    try:
        shutil.rmtree(staging)
    except FileNotFoundError:
        pass


def copy_tree(src: str, dst: str, skip: set[str], links: dict) -> None:
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        if entry.path in skip:
            continue
        st = entry.stat(follow_symlinks=False)
        target = os.path.join(dst, entry.name)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(target, 0o700)
            copy_tree(entry.path, target, skip, links)
        elif (st.st_dev, st.st_ino) in links and st.st_nlink > 1:
            os.link(links[(st.st_dev, st.st_ino)], target)
            continue
        elif not copy_entry(entry.path, target, st):
            continue  # a socket: meaningless without its listener, as cp -a skips it
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            links[(st.st_dev, st.st_ino)] = target
        copy_attrs(st, entry.path, target)


def copy_entry(src: str, dst: str, st: os.stat_result) -> bool:
    """Make dst as src's kind of file; False for what is not copied (sockets)."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(mode):
        copy_file(src, dst)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
    else:
        return False
    return True


def copy_file(src: str, dst: str) -> None:
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fin).st_size
            while size > 0:
                n = os.sendfile(fout, fin, None, min(size, 1 << 30))
                if n == 0:
                    break
                size -= n
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def copy_attrs(st: os.stat_result, src: str, dst: str) -> None:
    """Owner, then mode (chown clears setuid bits), xattrs, times; a symlink's own where the
    kernel has them (no mode: lchmod does not exist on Linux)."""
    link = stat.S_ISLNK(st.st_mode)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not link:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    copy_xattrs(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_xattrs(src: str, dst: str) -> None:
    try:
        keys = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return  # a file system without xattrs
    for key in keys:
        if key.startswith("trusted.overlay.") or key.startswith("security.selinux"):
            continue  # overlay's own bookkeeping; the label is the host's business
        try:
            os.setxattr(dst, key, os.getxattr(src, key, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            continue  # e.g. user.* on a symlink: the kernel refuses, cp -a drops it too
