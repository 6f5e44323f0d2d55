"""The layers stage: upper/work/merged for the container, overlay mounted on merged.

Undo unmounts and keeps upper/ (the container's changes), so `start` resumes them.
See overlayfs: https://docs.kernel.org/filesystems/overlayfs.html - workdir must be
an empty directory on the same filesystem as upperdir.
"""
from __future__ import annotations

import errno
import os

from steps import Change, Step, StepFailed, absent, applied, faults, linux, partial
from steps.facts import mounts_at, parse_overlay_options
from steps.image.store import Store
from steps.state import private_dir, save_record

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class LayersStep(Step):
    name = "layers"

    def image_record(self, pin: bool = False) -> dict:
        """The image this container was created from (pinned in its record on first use)."""
        store = Store(self.ctx.instance)
        image_id = self.ctx.spec.get("image_id")
        record = store.image(image_id) if image_id else store.resolve(self.ctx.spec["image"])
        if record is None:
            raise StepFailed(f"cannot mount the layers of {self.ctx.names.container}: "
                             f"image {self.ctx.spec['image']} is not in the store")
        if pin and not image_id:
            self.ctx.spec["image_id"] = record["id"]
            save_record(self.ctx.names, self.ctx.spec)
        return record

    def options(self, record: dict) -> str:
        """Lower dirs as short links relative to the store (mounted with the cwd there), as
        Docker's overlay2 does: an image of ~200 layers still fits the one page mount(2) takes."""
        n = self.ctx.names
        lower = ":".join(Store(self.ctx.instance).short_lowers(record))
        return f"lowerdir={lower},upperdir={n.upper},workdir={n.work}"

    def mount(self, record: dict) -> None:
        from steps.image.extract import InDirectory

        store = Store(self.ctx.instance)
        options = self.options(record)
        if len(options) >= PAGE_SIZE:
            raise StepFailed(f"image {self.ctx.spec['image']} has {len(record['layers'])} layers: too many "
                             f"for one overlay mount ({len(options)} bytes of options, the limit is {PAGE_SIZE})")
        private_dir(store.root)  # (a store made before it was root-only gets tightened here)
        store.link_short(record["layers"])
        with InDirectory(store.root):
            # nodev: a device node shipped in an image or made inside never opens (mount(2))
            linux.mount("overlay", self.ctx.names.merged, "overlay", linux.MS_NODEV, options)

    def check(self):
        n = self.ctx.names
        stack = mounts_at(n.merged)
        if not stack:
            missing = [d for d in (n.upper, n.work, n.merged) if not os.path.isdir(d)]
            changes = [Change(f"mkdir {d}") for d in missing]
            return absent(changes + [Change(f"mount overlay on {n.merged}")], "not mounted")
        top = stack[-1]
        try:
            want = dict(p.split("=", 1) for p in self.options(self.image_record()).split(","))
        except (StepFailed, KeyError):  # no record or no image: what is mounted cannot be ours to keep
            return partial([Change(f"mount on {n.merged}", f"{top.fstype} {top.source}", "unknown image")])
        have = parse_overlay_options(top.super_options)
        if top.fstype != "overlay" or "nodev" not in top.options or any(have.get(k) != v for k, v in want.items()):
            return partial([Change(f"mount on {n.merged}", f"{top.fstype} {top.source}", "our overlay")])
        return applied(f"overlay on {n.merged}")

    def apply(self):
        if self.check().applied:
            return
        n = self.ctx.names
        record = self.image_record(pin=True)
        for d in (n.upper, n.work, n.merged):
            os.makedirs(d, mode=0o755, exist_ok=True)
        faults.point("layers.apply.mid")
        if mounts_at(n.merged):
            self.undo()  # something stale or foreign-shaped: start from clean
        self.mount(record)

    def undo(self):
        merged = self.ctx.names.merged
        for _ in range(len(mounts_at(merged)) + 2):
            if not mounts_at(merged):
                return
            faults.point("layers.undo.mid")
            try:
                linux.umount(merged, linux.UMOUNT_NOFOLLOW)
            except OSError as e:
                if e.errno == errno.EBUSY:  # volumes or a straggler still below: detach all
                    linux.umount(merged, linux.MNT_DETACH | linux.UMOUNT_NOFOLLOW)
                elif e.errno not in (errno.EINVAL, errno.ENOENT):
                    raise
        if mounts_at(merged):
            raise StepFailed(f"cannot unmount {merged}: it stays mounted (shadowed by another mount?)")
