"""The image stage: the container's image is present in the local store."""
from __future__ import annotations

from steps import Change, Step, StepFailed, absent, applied
from steps.image.busybox import BUILTIN
from steps.image.store import Store
from steps.names import parse_image_ref


def canonical(ref: str) -> str:
    name, tag = parse_image_ref(ref)
    return f"{name}:{tag}"


def is_builtin(ref: str) -> bool:
    return ref == BUILTIN


def ensure_builtin(store: Store) -> dict:
    """Build the busybox image from the host's busybox-static when it is missing."""
    import io

    from steps.image.busybox import build_tar

    record = store.resolve(BUILTIN)
    if record is None:
        tar = build_tar(store.instance.busybox)
        record = store.import_tarball(io.BufferedReader(tar), BUILTIN,
                                      {"Cmd": ["/bin/sh"]}, f"built from {store.instance.busybox}")
    return record


class ImageStep(Step):
    name = "image"
    undoable = False

    @property
    def ref(self) -> str:
        return canonical(self.ctx.spec["image"])

    def check(self):
        store = Store(self.ctx.instance)
        record = store.resolve(self.ref)
        if record is not None:
            return applied(f"{self.ref} is {record['id'][:19]}")
        how = f"build from {self.ctx.instance.busybox}" if self.ref == BUILTIN else "not in the store"
        return absent([Change(f"image {self.ref}", "missing", how)])

    def apply(self):
        store = Store(self.ctx.instance)
        if self.ref == BUILTIN:
            ensure_builtin(store)
            return
        raise StepFailed(f"image {self.ref} is not in the local store; "
                         f"import it first: invoke image.import FILE --name {self.ref}")

    def undo(self):
        """Images outlive containers: nothing to undo."""


def import_rootfs(path: str, ref: str) -> str:
    """`image.import FILE --name NAME[:TAG]`; returns the image id."""
    from steps import config
    from steps.image.store import open_tarball

    ref = canonical(ref)
    store = Store(config.load())
    with open_tarball(path) as f:
        record = store.import_tarball(f, ref, {}, f"imported from {path}")
    return f"{ref} {record['id']}"
