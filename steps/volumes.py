"""The volumes stage: each bind (--volume SRC:DST[:ro]), named volume and tmpfs mounted under merged.

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
from steps.storage.mount_specs import bind_entry, parse_mount, parse_tmpfs, volume_entry

MAX_SYMLINKS = 40


def parse_volume(spec: str, instance=None) -> dict:
    """'SRC:DST[:ro|rw]': a bind when SRC is absolute, else the named volume SRC (made on first
    use); '/DST[:ro|rw]' alone: an anonymous volume. Refuses anything else."""
    parts = spec.split(":") if isinstance(spec, str) else []
    hint = "expected SRC:DST[:ro], VOLUME:DST[:ro] or /DST, e.g. /srv/data:/data:ro or pgdata:/data"
    if parts and parts[0].startswith("/") and (len(parts) == 1 or parts[1:] in (["ro"], ["rw"])):
        parts = ["", *parts]  # an anonymous volume
    elif len(parts) not in (2, 3) or not all(parts[:2]):
        raise BadInput(f"bad volume {spec!r}: {hint}")
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise BadInput(f"bad volume {spec!r}: mode {mode!r} must be ro or rw")
    if source.startswith("/"):
        return bind_entry(source, target, mode == "ro", f"volume {spec!r}")
    return volume_entry(instance, source or None, target, mode == "ro", f"volume {spec!r}")


def kind(vol: dict) -> str:
    """An entry's type; records made before named volumes have only binds."""
    return vol.get("type") or "bind"


def normal_volumes(volumes: list[dict] | None) -> list[dict] | None:
    """Entries as compared between two runs of one name: an anonymous volume's generated
    name does not make a different container."""
    out = [{**v, "type": kind(v)} for v in volumes or []]
    return [{k: x for k, x in v.items() if not (v.get("anonymous") and k in ("name", "source"))}
            for v in out] or None


def volumes_of(volume: list[str] | None, mount: list[str] | None, tmpfs: list[str] | None) -> list[dict]:
    """Every mount of a run, in the order -v, --mount, --tmpfs (Docker sorts by depth at
    mount time; targets given twice are refused by check_volumes)."""
    from steps import config

    instance = config.load() if volume or mount else None
    return ([parse_volume(v, instance) for v in volume or []] + [parse_mount(m, instance) for m in mount or []]
            + [parse_tmpfs(t) for t in tmpfs or []])


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
    remount_volume(vol, target)


def remount_volume(vol: dict, target: str) -> None:
    """The flags of a volume just bound at target: nodev, ro for `:ro`, the source's nosuid/noexec."""
    kept = os.statvfs(vol["source"]).f_flag & (linux.MS_NOSUID | linux.MS_NOEXEC)
    ro = linux.MS_RDONLY if vol["ro"] else 0
    linux.mount(None, target, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_NODEV | ro | kept)


def mount_tmpfs(vol: dict, where: str) -> None:
    """A tmpfs entry: its flags (Docker's nosuid,nodev,noexec unless turned around) and data."""
    bits = {"nosuid": linux.MS_NOSUID, "nodev": linux.MS_NODEV, "noexec": linux.MS_NOEXEC,
            "noatime": linux.MS_NOATIME, "nodiratime": linux.MS_NODIRATIME, "relatime": linux.MS_RELATIME,
            "strictatime": linux.MS_STRICTATIME}
    flags = sum(bits[f] for f in vol.get("flags") or []) | (linux.MS_RDONLY if vol["ro"] else 0)
    linux.mount("tmpfs", where, "tmpfs", flags, vol.get("options") or None)


def describe(vol: dict) -> str:
    if kind(vol) == "tmpfs":
        return f"tmpfs on {vol['target']}"
    if kind(vol) == "volume":
        return f"volume {vol['name']} on {vol['target']}"
    return f"bind {vol['source']} on {vol['target']}"


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
            return absent([Change(describe(v)) for v in self.volumes], "layers not mounted")
        changes = [c for v in self.volumes for c in self.differences(v)]
        if not changes:
            return applied(f"{len(self.volumes)} mounted")
        return (partial if present else absent)(changes)

    def differences(self, vol: dict) -> list[Change]:
        mode = "ro" if vol["ro"] else "rw"
        want = f"tmpfs ({mode})" if kind(vol) == "tmpfs" else f"{vol['source']} ({mode})"
        if kind(vol) == "volume" and not os.path.isdir(vol["source"]):
            return [Change(f"volume {vol['name']}", "absent", f"created, on {vol['target']}")]
        host = resolve_in_root(self.ctx.names.merged, vol["target"])
        stack = mounts_at(host) if host else []
        if not stack:
            return [Change(f"mount on {vol['target']}", "not mounted", want)]
        top = stack[-1]
        ro, nodev = "ro" in top.options, "nodev" in top.options
        if kind(vol) == "tmpfs":
            same = top.fstype == "tmpfs" and ro == vol["ro"]
        else:
            src, dst = os.stat(vol["source"]), os.stat(host)
            same = (src.st_dev, src.st_ino) == (dst.st_dev, dst.st_ino) and ro == vol["ro"] and nodev
        if not same:
            return [Change(f"mount on {vol['target']}", f"{top.source} ({'ro' if ro else 'rw'})", want)]
        return []

    def apply(self):
        merged = self.ctx.names.merged
        if not mounts_at(merged):
            raise StepFailed(f"cannot mount volumes: {merged} is not mounted (layers step)")
        claimed: dict[str, str] = {}
        for vol in self.volumes:
            if kind(vol) == "volume":
                self.make_volume(vol)
            host = self.target_of(vol, claimed)
            if self.differences(vol):
                self.mount(vol, host)
            faults.point("volumes.apply.mid")

    def make_volume(self, vol: dict) -> None:
        """The volume made on first use; an empty one is filled from the image's content at the
        target (unless volume-nocopy), as Docker does."""
        from steps.state import instance_lock
        from steps.storage import volume_store
        from steps.storage.volume_fill import clear, fill, is_empty, remove_staging

        with instance_lock(self.ctx.instance):  # not between `volume rm`'s check and its removal
            volume_store.create(self.ctx.instance, vol["name"], anonymous=vol.get("anonymous", False))
        staging = os.path.join(volume_store.volume_dir(self.ctx.instance, vol["name"]), "filling")
        if os.path.lexists(staging):  # a fill a kill interrupted: start it again from empty
            clear(vol["source"])
            if os.path.isdir(staging) and not os.path.islink(staging):
                remove_staging(staging)
            else:
                os.unlink(staging)  # the marker file of an older version
        image_path = resolve_in_root(self.ctx.names.merged, vol["target"])
        if (vol.get("nocopy") or image_path is None or not os.path.isdir(image_path)
                or os.path.islink(image_path) or mounts_at(image_path) or not is_empty(vol["source"])):
            return
        fill(image_path, vol["source"], staging)

    def target_of(self, vol: dict, claimed: dict[str, str]) -> str:
        """The host path of vol's target, made if missing; refuses the root and overlaps."""
        merged = self.ctx.names.merged
        as_dir = kind(vol) == "tmpfs" or os.path.isdir(vol["source"])
        host = resolve_in_root(merged, vol["target"], create=True, as_dir=as_dir)
        what = f"cannot mount {describe(vol)}"
        if os.path.normpath(host) == os.path.normpath(merged):
            raise StepFailed(f"{what}: in this image it resolves to the container's root /")
        if host in claimed:
            raise StepFailed(f"{what}: in this image it is the same place as {claimed[host]}")
        claimed[host] = vol["target"]
        if os.path.isdir(host) != as_dir:
            kind_ = "directory" if as_dir else "file"
            raise StepFailed(f"{what}: the source is a {kind_} and the target is not")
        return host

    def remount_inside(self, vol: dict, host: str) -> None:
        """Remount what was just bound through a new O_PATH fd of host, checked inside merged again:
        a container sharing a volume on the way to host may have swapped a part of the path for a
        symlink since, and a remount by path would then change the flags of a host mount."""
        fd = os.open(host, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
            if not real.startswith(os.path.realpath(self.ctx.names.merged) + "/"):
                raise StepFailed(f"cannot mount {describe(vol)}: {real} is outside the container")
            remount_volume(vol, f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    def mount(self, vol: dict, host: str) -> None:
        """Mount through an O_PATH fd checked to be inside merged (no symlink swap between
        resolving and mounting); the flags are bind_volume's or the tmpfs entry's."""
        merged = self.ctx.names.merged
        while mounts_at(host):  # a stale or wrong mount of ours at this target
            linux.umount(host, linux.MNT_DETACH | linux.UMOUNT_NOFOLLOW)
        fd = os.open(host, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
            if not real.startswith(os.path.realpath(merged) + "/"):
                raise StepFailed(f"cannot mount {describe(vol)}: {real} is outside the container")
            if kind(vol) == "tmpfs":
                mount_tmpfs(vol, f"/proc/self/fd/{fd}")
            else:
                linux.mount(vol["source"], f"/proc/self/fd/{fd}", None,
                            linux.MS_BIND | (0 if vol["ro"] else linux.MS_REC))
                self.remount_inside(vol, host)
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
