"""The container's mounts, made by its init before pivot_root (paths are host paths under root).

Docker's layout: /proc (nosuid,nodev,noexec) with masked and read-only paths, /dev a
tmpfs of standard nodes with its own devpts instance, /dev/shm and /dev/mqueue, /sys
read-only, /sys/fs/cgroup read-only showing only the container's own cgroup (a cgroup
namespace is rooted there), the rendered /etc files. Mount points the image controls are
never followed out of the rootfs: a symlink at /proc, /sys, /dev or an /etc file is
replaced in the container's own layer, as Docker's init layer does.
"""
from __future__ import annotations

import errno
import glob
import os
import stat

from steps import linux
from steps.facts import mounts
from steps.runtime.devices import standard_nodes
from steps.volumes import bind_volume, kind, mount_tmpfs, resolve_in_root

HARDENED = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
SKIP_HOST_DEV = {"pts", "shm", "mqueue", "hugepages", "ptmx", "fd", "stdin", "stdout", "stderr", "core"}


def prepare(plan: dict) -> None:
    """Every mount of the container, then pivot_root into it."""
    # Our mounts must not propagate back to the host (mount_namespaces(7)).
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    root, privileged = plan["rootfs"], plan["privileged"]
    for top in ("/proc", "/sys", "/dev"):
        replace_symlink(os.path.join(root, top.lstrip("/")), as_dir=True)
    linux.mount("proc", os.path.join(root, "proc"), "proc", HARDENED)
    mount_dev(root, privileged, plan.get("shm_size") or 65536 * 1024)
    rebind_dev_volumes(root, plan["dev_volumes"])
    bind_etc(root, plan["etc"])
    if plan.get("init"):
        bind_init(root, plan["init"])
    sysfs_flags = HARDENED | (0 if privileged else linux.MS_RDONLY)
    linux.mount("sysfs", os.path.join(root, "sys"), "sysfs", sysfs_flags)
    mount_cgroups(os.path.join(root, "sys/fs/cgroup"), plan["cgroup_mounts"], writable=privileged)
    mask(root, plan["masked_paths"])
    make_readonly(root, plan["readonly_paths"])
    if plan.get("read_only"):
        readonly_root(root, plan["workdir"])
    pivot(root)


def readonly_root(root: str, workdir: str) -> None:
    """--read-only: the root's own mount made read-only. A bind remount changes the flags of
    that one mount (mount(2), MS_REMOUNT with MS_BIND), so what is mounted on top of it -
    volumes, tmpfs, /dev, /proc, the /etc files - keeps its own."""
    resolve_in_root(root, workdir, create=True)  # a missing WorkingDir is made now or never
    kept = os.statvfs(root).f_flag & (linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    linux.mount(None, root, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | kept)


def replace_symlink(path: str, as_dir: bool) -> None:
    """A symlink (or nothing) where we mount becomes a real directory or file of the
    container's layer, so that no mount of ours lands where the image points."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISLNK(st.st_mode):
        return
    if st is not None:
        os.unlink(path)
    if as_dir:
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))


def bind_etc(root: str, files: dict[str, str]) -> None:
    """The rendered hosts, hostname and resolv.conf over the image's (/etc resolved inside root)."""
    mounted = {m.mount_point for m in mounts()}  # a volume the user bound there is theirs
    for inside, source in files.items():
        try:
            parent = resolve_in_root(root, os.path.dirname(inside), create=True)
            target = os.path.join(parent, os.path.basename(inside))
            replace_symlink(target, as_dir=False)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES):
                continue  # a read-only volume owns /etc: its files stand
            raise
        if os.path.isdir(target) or os.path.normpath(target) in mounted:
            continue  # an image with a directory there, or a volume the user bound there: theirs
        linux.mount(source, target, None, linux.MS_BIND)


def bind_init(root: str, binary: str) -> None:
    """--init: the host's static tini, bound read-only where Docker binds its docker-init
    (the mount point is made in the container's own layer, as Docker's init layer does)."""
    parent = resolve_in_root(root, "/sbin", create=True)
    target = os.path.join(parent, "docker-init")
    replace_symlink(target, as_dir=False)
    bind_volume({"source": binary, "ro": True}, target, target)


def mount_dev(root: str, privileged: bool, shm_size: int) -> None:
    dev = os.path.join(root, "dev")
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID | linux.MS_STRICTATIME, "mode=755,size=65536k")
    for node in standard_nodes():  # the allowlist's named nodes (steps/profiles/default.json)
        if node.path == "/dev/ptmx":
            continue  # a link to this devpts instance's own ptmx, made below
        kind = stat.S_IFBLK if node.type == "b" else stat.S_IFCHR
        make_node(os.path.join(root, node.path.lstrip("/")), kind | 0o666, os.makedev(node.major, node.minor))
    if privileged:
        copy_host_devices("/dev", dev)
    os.mkdir(os.path.join(dev, "pts"), 0o755)
    linux.mount("devpts", os.path.join(dev, "pts"), "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620,gid=5")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    for name, fstype, data in (("shm", "tmpfs", f"mode=1777,size={shm_size}"), ("mqueue", "mqueue", None)):
        os.mkdir(os.path.join(dev, name), 0o1777 if name == "shm" else 0o755)
        linux.mount(name, os.path.join(dev, name), fstype, HARDENED, data)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))


def rebind_dev_volumes(root: str, volumes: list[dict]) -> None:
    """Volumes under /dev (bound by the volumes stage, now under our /dev tmpfs) bound again on
    top of it, as Docker honours them: our tmpfs holds no path the image controls."""
    for vol in volumes:
        target = os.path.join(root, vol["target"].lstrip("/"))
        if kind(vol) == "tmpfs":
            os.makedirs(target, 0o755, exist_ok=True)
            mount_tmpfs(vol, target)
            continue
        if os.path.isdir(vol["source"]):
            os.makedirs(target, 0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
            if not os.path.exists(target):
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        bind_volume(vol, target, target)


def make_node(path: str, mode: int, device: int, uid: int = 0, gid: int = 0) -> None:
    os.mknod(path, mode, device)
    os.chmod(path, stat.S_IMODE(mode))
    os.chown(path, uid, gid)


def copy_host_devices(src: str, dst: str) -> None:
    """--privileged: the host's device nodes, as Docker gives them (the devices cgroup allows all)."""
    for entry in os.scandir(src):
        if entry.name in SKIP_HOST_DEV or entry.is_symlink():
            continue
        target = os.path.join(dst, entry.name)
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.makedirs(target, 0o755, exist_ok=True)
            copy_host_devices(entry.path, target)
        elif (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) and not os.path.exists(target):
            make_node(target, st.st_mode, st.st_rdev, st.st_uid, st.st_gid)


def mount_cgroups(target: str, mounts: list[dict], writable: bool) -> None:
    """The container's own cgroups: the init is in a cgroup namespace rooted at them, so the
    cgroupfs it mounts shows them as "/" (cgroup_namespaces(7)). Read-only unless privileged."""
    flags = HARDENED | (0 if writable else linux.MS_RDONLY)
    if len(mounts) == 1 and not mounts[0]["dir"]:  # pure v2: the unified hierarchy right there
        linux.mount("cgroup2", target, "cgroup2", flags)
        return
    linux.mount("tmpfs", target, "tmpfs", HARDENED, "mode=755")
    for m in mounts:
        path = os.path.join(target, m["dir"])
        os.mkdir(path, 0o555)
        linux.mount("cgroup", path, m["fstype"], flags, m["data"])
    linux.mount(None, target, None, linux.MS_REMOUNT | HARDENED | linux.MS_RDONLY, "mode=755")


def mask(root: str, patterns: list[str]) -> None:
    """Masked paths read as empty: a directory under a read-only tmpfs, a file under /dev/null
    (the host's, bound before pivot_root: never a node the container could have replaced,
    runc CVE-2025-31133). Only paths that exist, never through a symlink."""
    for path in expand(root, patterns):
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            linux.mount("tmpfs", path, "tmpfs", HARDENED | linux.MS_RDONLY, "size=0")
        else:
            linux.mount("/dev/null", path, None, linux.MS_BIND)


def make_readonly(root: str, patterns: list[str]) -> None:
    """A read-only bind of the path onto itself (a bind mount takes its own flags on remount)."""
    for path in expand(root, patterns):
        linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
        linux.mount(None, path, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | HARDENED)


def expand(root: str, patterns: list[str]) -> list[str]:
    """The host paths of patterns under root that exist and are not symlinks."""
    found = []
    for pattern in patterns:
        full = glob.escape(root) + pattern
        for path in sorted(glob.glob(full)) if "*" in pattern else [full]:
            try:
                if not stat.S_ISLNK(os.lstat(path).st_mode):
                    found.append(path)
            except OSError:
                continue
    return found


def pivot(root: str) -> None:
    """pivot_root(".", ".") stacks the old root on top of the new one; detaching
    it leaves only the new root (pivot_root(2), NOTES: "new_root and put_old
    may be the same directory"). It avoids needing a put_old directory in the image."""
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")
