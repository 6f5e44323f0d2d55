"""The volumes stage: each --volume SRC:DST[:ro] bind-mounted under merged.

DST is resolved inside the container's rootfs as the container would see it:
symlinks in the image are followed relative to the rootfs root, never the
host's, so `/data -> /etc` or `/data -> ../../../etc` stays inside merged.
The container is not running while this stage applies, so its rootfs cannot
change between the resolution and the mount.
"""
from __future__ import annotations

import errno
import os
import stat

from steps import BadInput, Change, Step, StepFailed, absent, applied, faults, linux, nothing, partial
from steps.facts import mounts_at, mounts_below

MAX_SYMLINKS = 40


def parse_volume(spec: str) -> dict:
    """'SRC:DST[:ro|rw]' -> {"source", "target", "ro"}; refuses anything else."""
    parts = spec.split(":") if isinstance(spec, str) else []
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise BadInput(f"bad volume {spec!r}: expected SRC:DST[:ro], e.g. /srv/data:/data:ro")
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise BadInput(f"bad volume {spec!r}: mode {mode!r} must be ro or rw")
    for label, path in (("source", source), ("target", target)):
        if not os.path.isabs(path):
            raise BadInput(f"bad volume {spec!r}: {label} {path!r} must be an absolute path")
        if ".." in path.split("/") or "\0" in path or "\n" in path:
            raise BadInput(f"bad volume {spec!r}: {label} {path!r} must not contain '..'")
    target = os.path.normpath(target)
    if target == "/":
        raise BadInput(f"bad volume {spec!r}: the target cannot be / (the container's root)")
    if not os.path.exists(source):
        raise BadInput(f"bad volume {spec!r}: source {source} does not exist on the host")
    return {"source": os.path.realpath(source), "target": target, "ro": mode == "ro"}


def check_volumes(volumes: list[dict]) -> None:
    targets = [v["target"] for v in volumes]
    dupes = sorted({t for t in targets if targets.count(t) > 1})
    if dupes:
        raise BadInput(f"bad volumes: target {dupes[0]} is given twice; each target once")


def resolve_in_root(root: str, path: str, create: bool = False, as_dir: bool = True) -> str | None:
    """Host path of `path` as seen with `root` as /, following symlinks inside root only.

    Returns None when it does not exist (and create is False). Missing parts
    are created as directories (the last one as a file when as_dir is False).
    """
    done: list[str] = []
    todo = [p for p in path.split("/") if p not in ("", ".")]
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        host = os.path.join(root, *done, part)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            if not create:
                return None
            if todo or as_dir:
                os.mkdir(host, 0o755)
            else:
                os.close(os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
            done.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise StepFailed(f"cannot resolve {path} in the container: too many symlinks")
            target = os.readlink(host)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        if todo and not stat.S_ISDIR(st.st_mode):
            raise StepFailed(f"cannot resolve {path} in the container: {'/' + '/'.join(done + [part])} "
                             "is not a directory")
        done.append(part)
    return os.path.join(root, *done)


def bind_volume(vol: dict, where: str, target: str) -> None:
    """Bind vol's source on where (a path, or /proc/self/fd/N of the checked target), then remount
    target with its own flags: nodev always, read-only for `:ro`, the source's nosuid/noexec kept.
    A read-only volume is bound without its submounts, as a recursive bind would leave them writable."""
    linux.mount(vol["source"], where, None, linux.MS_BIND | (0 if vol["ro"] else linux.MS_REC))
    kept = os.statvfs(vol["source"]).f_flag & (linux.MS_NOSUID | linux.MS_NOEXEC)
    ro = linux.MS_RDONLY if vol["ro"] else 0
    linux.mount(None, target, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_NODEV | ro | kept)


class VolumesStep(Step):
    name = "volumes"

    @property
    def volumes(self) -> list[dict]:
        return self.ctx.spec.get("volumes") or []

    def check(self):
        merged = self.ctx.names.merged
        present = mounts_below(merged)
        if not self.volumes:
            if present:
                return partial([Change(f"unexpected mount {m.mount_point}") for m in present])
            return nothing("no volumes")
        if not mounts_at(merged):
            return absent([Change(f"bind {v['source']} on {v['target']}") for v in self.volumes],
                          "layers not mounted")
        changes = [c for v in self.volumes for c in self.differences(v)]
        if not changes:
            return applied(f"{len(self.volumes)} bound")
        return (partial if present else absent)(changes)

    def differences(self, vol: dict) -> list[Change]:
        want = f"{vol['source']} ({'ro' if vol['ro'] else 'rw'})"
        host = resolve_in_root(self.ctx.names.merged, vol["target"])
        stack = mounts_at(host) if host else []
        if not stack:
            return [Change(f"bind on {vol['target']}", "not mounted", want)]
        src, dst = os.stat(vol["source"]), os.stat(host)
        ro = "ro" in stack[-1].options
        nodev = "nodev" in stack[-1].options
        if (src.st_dev, src.st_ino) != (dst.st_dev, dst.st_ino) or ro != vol["ro"] or not nodev:
            return [Change(f"bind on {vol['target']}", f"{stack[-1].source} ({'ro' if ro else 'rw'})", want)]
        return []

    def apply(self):
        merged = self.ctx.names.merged
        if not mounts_at(merged):
            raise StepFailed(f"cannot mount volumes: {merged} is not mounted (layers step)")
        claimed: dict[str, str] = {}
        for vol in self.volumes:
            host = self.target_of(vol, claimed)
            if self.differences(vol):
                self.bind(vol, host)
            faults.point("volumes.apply.mid")

    def target_of(self, vol: dict, claimed: dict[str, str]) -> str:
        """The host path of vol's target, made if missing; refuses the root and overlaps."""
        merged = self.ctx.names.merged
        as_dir = os.path.isdir(vol["source"])
        host = resolve_in_root(merged, vol["target"], create=True, as_dir=as_dir)
        what = f"cannot mount {vol['source']} on {vol['target']}"
        if os.path.normpath(host) == os.path.normpath(merged):
            raise StepFailed(f"{what}: in this image it resolves to the container's root /")
        if host in claimed:
            raise StepFailed(f"{what}: in this image it is the same place as {claimed[host]}")
        claimed[host] = vol["target"]
        if os.path.isdir(host) != as_dir:
            kind = "directory" if as_dir else "file"
            raise StepFailed(f"{what}: the source is a {kind} and the target is not")
        return host

    def bind(self, vol: dict, host: str) -> None:
        """Bind through an O_PATH fd checked to be inside merged (no symlink swap between
        resolving and mounting); the flags are bind_volume's."""
        merged = self.ctx.names.merged
        while mounts_at(host):  # a stale or wrong bind of ours at this target
            linux.umount(host, linux.MNT_DETACH | linux.UMOUNT_NOFOLLOW)
        fd = os.open(host, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
            if not real.startswith(os.path.realpath(merged) + "/"):
                raise StepFailed(f"cannot mount {vol['source']} on {vol['target']}: {real} is outside the container")
            bind_volume(vol, f"/proc/self/fd/{fd}", host)
        finally:
            os.close(fd)

    def undo(self):
        for m in mounts_below(self.ctx.names.merged):
            faults.point("volumes.undo.mid")
            try:
                linux.umount(m.mount_point, linux.UMOUNT_NOFOLLOW)
            except OSError as e:
                if e.errno == errno.EBUSY:
                    linux.umount(m.mount_point, linux.MNT_DETACH | linux.UMOUNT_NOFOLLOW)
                elif e.errno not in (errno.EINVAL, errno.ENOENT):
                    raise
