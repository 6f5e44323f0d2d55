"""The image stage: the container's image is present in the local store."""
from __future__ import annotations

import os

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


def command_in_image(instance, ref: str, argv0: str, env: list[str]) -> bool:
    """Whether the image has argv0, asked before anything is made (the built-in busybox
    need not be built yet: its applet list answers)."""
    from steps.image.busybox import paths
    from steps.spec import command_candidates, command_exists

    ref = canonical(ref)
    store = Store(instance)
    record = store.resolve(ref)
    if record is not None:
        return command_exists(store.lower_dirs(record), argv0, env)
    if not is_builtin(ref):
        return True
    try:
        present = paths(instance.busybox)
    except Exception:  # noqa: BLE001 - missing or broken busybox: the build will say what is wrong
        return True
    candidates = command_candidates(argv0, env)
    return not candidates or any(os.path.normpath(c) in present for c in candidates)


def import_rootfs(path: str, ref: str) -> str:
    """`image.import FILE --name NAME[:TAG]`; returns the image id."""
    from steps import config
    from steps.image.store import open_tarball

    ref = canonical(ref)
    store = Store(config.load())
    with open_tarball(path) as f:
        record = store.import_tarball(f, ref, {}, f"imported from {path}")
    return f"{ref} {record['id']}"
