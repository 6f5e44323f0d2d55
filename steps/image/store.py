"""The image store: layers by diff id, image records, and the name:tag index.

    images/layers/<hex>/        one unpacked layer, named by its diff id; never changes
    images/images/<hex>.json    an image record: its layers (bottom first) and config
    images/repositories.json    {"name:tag": "sha256:<image id>"}
    images/tmp/                 extractions in progress (cleaned under the store lock)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid

from steps import BadInput, DiyError, faults
from steps.config import Instance
from steps.names import images_dir
from steps.state import Lock, instance_lock, now_iso, read_json, write_json

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def check_digest(digest: str) -> str:
    """Digests are validated as strings before they become part of a path."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise BadInput(f"bad digest {digest!r}: expected sha256:<64 hex digits>")
    return digest


class Store:
    def __init__(self, instance: Instance):
        self.instance = instance
        self.root = images_dir(instance)

    def layer_dir(self, diff_id: str) -> str:
        return os.path.join(self.root, "layers", check_digest(diff_id)[7:])

    def record_path(self, image_id: str) -> str:
        return os.path.join(self.root, "images", check_digest(image_id)[7:] + ".json")

    @property
    def index_path(self) -> str:
        return os.path.join(self.root, "repositories.json")

    def lock(self) -> Lock:
        """The instance lock: the store is state every container of the instance shares."""
        return instance_lock(self.instance)

    def index(self) -> dict[str, str]:
        return read_json(self.index_path) or {}

    def image(self, image_id: str) -> dict | None:
        return read_json(self.record_path(image_id))

    def resolve(self, ref: str) -> dict | None:
        """The record of name:tag when it and all its layers are present."""
        image_id = self.index().get(ref)
        record = self.image(image_id) if image_id else None
        if record is None or not all(os.path.isdir(self.layer_dir(d)) for d in record["layers"]):
            return None
        return record

    def lower_dirs(self, record: dict) -> list[str]:
        """Overlay lower dirs, top layer first."""
        return [self.layer_dir(d) for d in reversed(record["layers"])]

    # --- writing (callers hold self.lock()) ---------------------------------

    def new_tmp(self) -> str:
        path = os.path.join(self.root, "tmp", uuid.uuid4().hex)
        os.makedirs(path, mode=0o700)
        os.chmod(path, 0o755)
        return path

    def clean_tmp(self) -> None:
        """Remove extractions a killed import left behind; safe only under the lock."""
        shutil.rmtree(os.path.join(self.root, "tmp"), ignore_errors=True)

    def commit_layer(self, tmp: str, diff_id: str) -> str:
        """Rename a finished extraction to its diff id; an existing copy wins."""
        final = self.layer_dir(diff_id)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        if os.path.isdir(final):
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
        return final

    def register(self, ref: str, layers: list[str], config: dict, source: str) -> dict:
        body = {"layers": layers, "config": config}
        image_id = "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        record = {"id": image_id, **body, "created": now_iso(), "source": source}
        if self.image(image_id) is None:
            write_json(self.record_path(image_id), record)
        index = self.index()
        index[ref] = image_id
        write_json(self.index_path, index)
        return record

    def import_tarball(self, fileobj, ref: str, config: dict, source: str) -> dict:
        from steps.image.extract import extract

        with self.lock():
            self.clean_tmp()
            fresh = missing_dirs(os.path.join(self.root, "tmp"))
            tmp = self.new_tmp()
            try:
                diff_id, _ = extract(fileobj, tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                remove_empty(reversed(fresh))  # a refused import leaves no trace
                raise
            faults.point("image.apply.mid")
            self.commit_layer(tmp, diff_id)
            return self.register(ref, [diff_id], config, source)


def missing_dirs(path: str) -> list[str]:
    """path and those of its ancestors that do not exist yet, outermost first."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing[::-1]


def remove_empty(dirs) -> None:
    for d in dirs:
        try:
            os.rmdir(d)
        except OSError:
            pass


def open_tarball(path: str):
    """Open a user's tarball for reading, with a clear line when it is not one."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise BadInput(f"cannot import {path}: {e.strerror}") from None
    if not os.path.isfile(path):
        raise BadInput(f"cannot import {path}: not a regular file (expected a rootfs tarball)")
    if st.st_size == 0:
        raise BadInput(f"cannot import {path}: the file is empty")
    try:
        return open(path, "rb")
    except OSError as e:
        raise DiyError(f"cannot import {path}: {e.strerror}") from None
