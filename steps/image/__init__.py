"""The image stage: the container's image is present in the local store.

check asks the store; apply builds the built-in busybox or pulls the image
from its registry (an image stays when its container goes: undo does nothing).
"""
from __future__ import annotations

import os

from steps import Change, Step, absent, applied
from steps.image.busybox import BUILTIN
from steps.image.reference import canonical
from steps.image.store import Store


def is_builtin(ref: str) -> bool:
    return canonical(ref) == BUILTIN


def ensure_builtin(store: Store) -> dict:
    """Build the busybox image from the host's busybox-static when it is missing."""
    import io

    from steps.image.busybox import build_tar

    record = store.resolve(BUILTIN)
    if record is None:
        tar = build_tar(store.instance.busybox)
        record = store.import_tarball(io.BufferedReader(tar), BUILTIN, {"Cmd": ["/bin/sh"]},
                                      f"built from {store.instance.busybox}")
    return record


def ensure_image(store: Store, ref: str, credentials=None) -> dict:
    """The record of ref: from the store, built (busybox) or pulled."""
    from steps.image.reference import parse_reference
    from steps.image.registry import pull

    record = store.resolve(ref)
    if record is not None:
        return record
    if is_builtin(ref):
        return ensure_builtin(store)
    return pull(store, parse_reference(ref), credentials)


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
        if is_builtin(self.ref):
            return absent([Change(f"image {self.ref}", "missing", f"build from {self.ctx.instance.busybox}")])
        return absent([Change(f"image {self.ref}", "missing", "pull from its registry")])

    def apply(self):
        ensure_image(Store(self.ctx.instance), self.ref)

    def undo(self):
        """Images outlive containers: nothing to undo."""


def runtime_config(record: dict | None) -> dict:
    """The runtime part of an image record's config (Entrypoint, Cmd, Env, ...)."""
    return ((record or {}).get("config") or {}).get("config") or {}


def container_config(instance, spec: dict) -> dict:
    """The runtime config of a container's image: by its image_id once the image step recorded it,
    else by name; {} when the store has neither (what Docker's defaults then answer)."""
    store = Store(instance)
    if spec.get("image_id"):
        return runtime_config(store.image(spec["image_id"]))
    return runtime_config(store.resolve(spec["image"]) if spec.get("image") else None)  # a teardown without a record


def missing_command(instance, spec: dict) -> str | None:
    """The program the container would exec when the image lacks it, asked before
    anything is made (the built-in busybox need not be built yet: its applet list
    answers; an image still to pull is not judged)."""
    from steps.image.busybox import paths
    from steps.runtime.command import command_argv, command_candidates, command_exists

    store = Store(instance)
    record = store.resolve(spec["image"])
    config = runtime_config(record)
    argv0 = command_argv(spec, config)[0]
    env = list(config.get("Env") or []) + list(spec.get("env") or [])
    if record is not None:
        if len(record["layers"]) > 1:
            return None  # a symlink of one layer can lead into another: exec will judge (127)
        return None if command_exists(store.lower_dirs(record), argv0, env) else argv0
    if not is_builtin(spec["image"]):
        return None
    try:
        present = paths(instance.busybox)
    except Exception:  # noqa: BLE001 - missing or broken busybox: the build will say what is wrong
        return None
    candidates = command_candidates(argv0, env)
    return None if not candidates or any(os.path.normpath(c) in present for c in candidates) else argv0
