"""The teardown stage: the container's record, upper layer and runtime files are removed,
and any image work a killed run left behind (an interrupted busybox build, a pull)."""
from __future__ import annotations

import os
import shutil

from steps import Change, Step, StepFailed, absent, applied, faults
from steps.facts import mounts_at, mounts_below


class TeardownStep(Step):
    name = "teardown"

    def leftovers(self) -> list[str]:
        from steps.image.store import Store

        n = self.ctx.names
        own = [p for p in (n.container_dir, n.runtime_dir) if os.path.lexists(p)]
        return own + Store(self.ctx.instance).dead_tmp() + self.volumes_to_remove()

    def volumes_to_remove(self) -> list[str]:
        """With `rm -v` or `run --rm` (and when a failed run is forgotten): the container's
        anonymous volumes no other container uses. Named volumes always stay."""
        from steps.storage import volume_store

        if not (self.ctx.spec.get("rm") or self.ctx.spec.get("remove_volumes")):
            return []
        instance = self.ctx.instance
        return [volume_store.volume_dir(instance, v) for v in volume_store.anonymous_of(instance, self.ctx.spec)]

    def check(self):
        left = self.leftovers()
        if not left:
            return applied("no files left")
        return absent([Change(f"remove {p}") for p in left])

    def apply(self):
        n = self.ctx.names
        # rmtree would descend into a bind mount and delete the host's files: refuse.
        busy = [m for d in (n.container_dir, n.runtime_dir) for m in mounts_below(d) + mounts_at(d)]
        if busy:
            raise StepFailed(f"cannot remove {n.container_dir}: {busy[0].mount_point} is still mounted")
        own = (n.container_dir, n.runtime_dir)
        volumes = self.volumes_to_remove()
        for path in self.leftovers():
            faults.point("teardown.apply.mid")
            if path in volumes:
                from steps.storage import volume_store

                volume_store.remove(self.ctx.instance, os.path.basename(path))
                continue
            shutil.rmtree(path, ignore_errors=path not in own)  # another teardown may clean it too

    def undo(self):
        """Removal cannot be undone."""
