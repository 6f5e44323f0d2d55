"""The image store: layers by diff id, image records, and the name:tag index.

    images/layers/<hex>/        one unpacked layer, named by its diff id; never changes
    images/l/<short>            a short symlink to ../layers/<hex>, for overlay's lowerdir
    images/images/<hex>.json    an image record (id = config digest): config, layers bottom first
    images/repositories.json    {"name:tag": "sha256:<image id>"}
    images/staged/<hex>/        a verified layer of an image not registered yet (resumable)
    images/blobs/sha256/<hex>   a verified download waiting to be unpacked (resumable)
    images/tmp/<pid>-<start>-*  work in progress of one process; removed once it is gone

Bringing an image in: every layer is unpacked under tmp/, its diff id checked,
then renamed into staged/. Once all are there, under the instance lock: the
record is written, the staged layers renamed into layers/, and last the name is
written into the index. A kill before the record leaves only staged work (taken
up by the next attempt, removed by prune); after it, every layer in layers/
belongs to a record, and a name points only at an image whose layers all exist.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
from contextlib import contextmanager
from typing import BinaryIO

from steps import BadInput, DiyError, faults
from steps.config import Instance
from steps.exhaustion import doing, exhausted, explain
from steps.image.reference import DIGEST, canonical
from steps.names import images_dir
from steps.state import (
    dead_writes,
    instance_lock,
    now_iso,
    private_dir,
    read_json,
    remove_empty,
    remove_file,
    write_json,
)

SHORT = 16  # hex digits of a short link name: 4096-byte mount options hold ~200 layers


def check_digest(digest: str) -> str:
    """Digests are validated as strings before they become part of a path or a URL."""
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise BadInput(f"bad digest {str(digest)[:80]!r}: expected sha256:<64 lowercase hex digits>")
    return digest


def sha256_digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


class Store:
    def __init__(self, instance: Instance):
        self.instance = instance
        self.root = images_dir(instance)
        self.made: list[str] = []  # staged layers and blobs this bringing-in made (given back if it fails)

    # --- paths ---------------------------------------------------------------

    def layer_dir(self, diff_id: str) -> str:
        return os.path.join(self.root, "layers", check_digest(diff_id)[7:])

    def staged_dir(self, diff_id: str) -> str:
        return os.path.join(self.root, "staged", check_digest(diff_id)[7:])

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.root, "blobs", "sha256", check_digest(digest)[7:])

    def record_path(self, image_id: str) -> str:
        return os.path.join(self.root, "images", check_digest(image_id)[7:] + ".json")

    @property
    def index_path(self) -> str:
        return os.path.join(self.root, "repositories.json")

    @contextmanager
    def lock(self):
        """The instance lock: the store is state every container of the instance shares.
        Taking it also gives back what killed imports and pulls left in tmp/."""
        with instance_lock(self.instance):
            self.clean_tmp()
            yield

    # --- reading -------------------------------------------------------------

    def index(self) -> dict[str, str]:
        return read_json(self.index_path) or {}

    def image(self, image_id: str) -> dict | None:
        return read_json(self.record_path(image_id))

    def records(self) -> list[dict]:
        d = os.path.join(self.root, "images")
        names = sorted(os.listdir(d)) if os.path.isdir(d) else []
        return [r for n in names if n.endswith(".json") and (r := read_json(os.path.join(d, n)))]

    def complete(self, record: dict | None) -> bool:
        return record is not None and all(os.path.isdir(self.layer_dir(d)) for d in record["layers"])

    def resolve(self, ref: str) -> dict | None:
        """The record of a reference when it and all its layers are present."""
        image_id = self.index().get(canonical(ref))
        record = self.image(image_id) if image_id else None
        return record if self.complete(record) else None

    def has_layer(self, diff_id: str) -> bool:
        return os.path.isdir(self.layer_dir(diff_id)) or os.path.isdir(self.staged_dir(diff_id))

    def lower_dirs(self, record: dict) -> list[str]:
        """Overlay lower dirs, top layer first (absolute paths)."""
        return [self.layer_dir(d) for d in top_first(record["layers"])]

    def short_lowers(self, record: dict) -> list[str]:
        """Overlay lower dirs as short links relative to the store root, top first."""
        return [f"l/{d[7:7 + SHORT]}" for d in top_first(record["layers"])]

    # --- writing -------------------------------------------------------------

    def new_tmp(self) -> str:
        """A work directory of this process (cleaned by others once it is gone)."""
        from steps.facts import process_start

        name = f"{os.getpid()}-{process_start(os.getpid())}-{os.urandom(4).hex()}"
        path = os.path.join(self.root, "tmp", name)
        private_dir(self.root)
        os.makedirs(path, mode=0o700)
        os.chmod(path, 0o755)
        return path

    def dead_tmp(self) -> list[str]:
        """Work directories whose process is gone (a kill leaves them)."""
        from steps.facts import process_alive

        tmp = os.path.join(self.root, "tmp")
        dead = []
        for name in sorted(os.listdir(tmp)) if os.path.isdir(tmp) else []:
            pid, _, rest = name.partition("-")
            start = rest.partition("-")[0]
            if not (pid.isdigit() and start.isdigit() and process_alive(int(pid), int(start))):
                dead.append(os.path.join(tmp, name))
        return dead

    def clean_tmp(self) -> None:
        for path in self.dead_tmp() + self.dead_writes():
            remove_tree(path)

    def dead_writes(self) -> list[str]:
        """`*.tmp-<pid>` files of atomic writes whose process was killed before the rename."""
        return dead_writes(self.root) + dead_writes(os.path.join(self.root, "images"))

    def stage_layer(self, fileobj: BinaryIO, expect: str | None, what: str) -> tuple[str, int]:
        """Unpack one layer and check its diff id; returns (diff id, size)."""
        from steps.image.extract import extract

        if expect and self.has_layer(expect):
            return expect, 0
        tmp = self.new_tmp()
        try:
            try:
                diff_id, size = extract(fileobj, tmp, self.instance.max_layer_bytes)
            except (OSError, MemoryError) as e:
                if not exhausted(e):
                    raise
                remove_tree(tmp)  # first: the space it held counts as free in the line
                self.give_back()
                doing = f"unpacking layer {expect} ({what})" if expect else f"unpacking the layer {what}"
                raise explain(e, doing, self.root, getattr(e, "stream_size", 0)) from None
            if expect and diff_id != expect:
                raise BadInput(f"{what}: the unpacked layer has digest {diff_id}, the image config "
                               f"says {expect}: the image is corrupt or was tampered with")
            faults.point("image.stage.mid")
            target = self.staged_dir(diff_id)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if self.has_layer(diff_id):
                remove_tree(tmp)
                return diff_id, size
            try:
                os.rename(tmp, target)
            except OSError as e:  # staged meanwhile by another pull: theirs wins
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                remove_tree(tmp)
            else:
                self.made.append(target)
            return diff_id, size
        except BaseException:
            remove_tree(tmp)
            raise

    def commit(self, keys: list[str], config_bytes: bytes, layers: list[str], source: str,
               extra: dict | None = None) -> dict:
        """Register an image whose layers are all staged or present (see the module doc)."""
        config = json.loads(config_bytes)
        image_id = sha256_digest(config_bytes)
        with self.lock():
            missing = [d for d in layers if not self.has_layer(d)]
            if missing:
                raise DiyError(f"cannot register {', '.join(keys) or image_id}: layer {missing[0]} "
                               "went missing (pruned meanwhile?); try again")
            known = self.image(image_id)
            record = known or {
                "id": image_id, "layers": layers, "config": config, "source": source,
                "created": config.get("created") or now_iso(), **(extra or {})}
            published = [d for d in layers if not os.path.isdir(self.layer_dir(d))]
            try:
                with doing(f"registering {', '.join(keys) or image_id}", self.root):
                    write_json(self.record_path(image_id), record)
                    faults.point("image.commit.mid")
                    for diff_id in layers:
                        self.publish_layer(diff_id)
                    self.link_short(layers)
                    index = self.index()
                    index.update({k: image_id for k in keys})
                    write_json(self.index_path, index)
            except Exception:
                if known is None:
                    self.unregister(image_id, published)
                raise
        return record

    def unregister(self, image_id: str, layers: list[str]) -> None:
        """Undo a commit that failed before the name was written: its record goes, and so do
        the layers it published that no other record uses (the index never named it)."""
        remove_file(self.record_path(image_id))
        used = {d for r in self.records() for d in r["layers"]}
        for diff_id in layers:
            if diff_id not in used:
                self.discard(self.layer_dir(diff_id))
        self.remove_dangling_links()

    def publish_layer(self, diff_id: str) -> None:
        final, staged = self.layer_dir(diff_id), self.staged_dir(diff_id)
        if os.path.isdir(final):
            return
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.rename(staged, final)

    def link_short(self, layers: list[str]) -> None:
        d = os.path.join(self.root, "l")
        os.makedirs(d, exist_ok=True)
        for diff_id in layers:
            link = os.path.join(d, diff_id[7:7 + SHORT])
            want = os.path.join("..", "layers", diff_id[7:])
            try:
                current = os.readlink(link)
            except FileNotFoundError:
                os.symlink(want, link)
                continue
            if current != want and os.path.isdir(os.path.join(d, current)):
                raise DiyError(f"layer {diff_id} shares the first {SHORT} hex digits of its digest with "
                               f"another layer of the store ({current}): refusing to mix them up")
            if current != want:
                os.unlink(link)  # a link left by a removed layer
                os.symlink(want, link)

    def import_tarball(self, fileobj: BinaryIO, ref: str, runtime: dict, source: str) -> dict:
        """A flat rootfs tarball as a one-layer image with a synthesized config."""
        with self.bringing_in():
            self.clean_tmp()
            diff_id, size = self.stage_layer(fileobj, None, source)
            faults.point("image.apply.mid")
            config = synthesized_config(diff_id, runtime)
            return self.commit([canonical(ref)], config, [diff_id], source, {"size": size})

    # --- removing (callers hold self.lock()) ---------------------------------

    def untag(self, key: str) -> str | None:
        index = self.index()
        image_id = index.pop(key, None)
        write_json(self.index_path, index)
        return image_id

    def remove_unused(self, keep_ids: set[str], work: bool = False) -> tuple[list[str], list[str]]:
        """Records no name and no container uses, then layers no record uses; with work,
        also staged layers and blobs (unfinished pulls: prune, not rmi)."""
        named = set(self.index().values()) | keep_ids
        removed_images = []
        for record in self.records():
            if record["id"] not in named:
                os.unlink(self.record_path(record["id"]))
                removed_images.append(record["id"])
        used = {d for r in self.records() for d in r["layers"]}
        removed_layers = []
        base = os.path.join(self.root, "layers")
        for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            if f"sha256:{name}" not in used:
                self.discard(os.path.join(base, name))
                removed_layers.append(f"sha256:{name}")
        self.remove_dangling_links()
        for path in self.unfinished() if work else []:
            self.discard(path)
        return removed_images, removed_layers

    def unfinished(self) -> list[str]:
        """Staged layers and downloaded blobs (whole or partial) no record holds yet: what a
        killed pull or import left, kept for the same pull to take up; prune gives it back."""
        found = []
        for sub in ("staged", os.path.join("blobs", "sha256")):
            base = os.path.join(self.root, sub)
            found += [os.path.join(base, n) for n in sorted(os.listdir(base))] if os.path.isdir(base) else []
        return found

    def discard(self, path: str) -> None:
        """Move aside in one rename, then delete: a kill midway never leaves a
        half-deleted layer where a pull would take it for whole."""
        try:
            trash = self.new_tmp()
        except OSError:  # a full disk may refuse even a directory: delete in place
            remove_tree(path)
            return
        try:
            os.rename(path, os.path.join(trash, "x"))
        except FileNotFoundError:
            pass
        remove_tree(trash)

    def give_back(self) -> None:
        """What a failed bringing-in staged or downloaded and no record uses goes at once."""
        used = {d[7:] for r in self.records() for d in r["layers"]}
        for path in reversed(self.made):
            if os.path.basename(path) not in used:
                self.discard(path)
        self.made.clear()

    @contextmanager
    def bringing_in(self):
        """Held (shared) while work is staged and committed; prune takes it exclusively
        and keeps unfinished work while any pull, load or import runs."""
        fresh = missing_dirs(os.path.join(self.root, "tmp"))
        private_dir(self.root)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        except BaseException:
            self.give_back()
            os.close(fd)
            fd = -1
            remove_empty(*reversed(fresh))  # a refused image leaves no trace, not even the store
            raise
        finally:
            if fd >= 0:
                os.close(fd)

    @contextmanager
    def quiet(self):
        """Yields whether no pull, load or import runs, holding that true for the block."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                idle = True
            except BlockingIOError:
                idle = False
            yield idle
        finally:
            os.close(fd)

    def remove_dangling_links(self) -> None:
        d = os.path.join(self.root, "l")
        for name in os.listdir(d) if os.path.isdir(d) else []:
            path = os.path.join(d, name)
            if not os.path.exists(path):
                os.unlink(path)


def top_first(layers: list[str]) -> list[str]:
    """Layers top first, a layer listed twice only where it is highest: overlayfs refuses
    the same lower dir twice, and the higher copy already shows all the lower one did."""
    return list(dict.fromkeys(reversed(layers)))


def missing_dirs(path: str) -> list[str]:
    """path and those of its ancestors that do not exist yet, outermost first."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing[::-1]


def synthesized_config(diff_id: str, runtime: dict) -> bytes:
    """An OCI image config for an image that came without one (a rootfs tarball)."""
    from steps.image.platform import host_platform

    plat = host_platform()
    config = {"architecture": plat["architecture"], "os": "linux", "created": now_iso(),
              "config": runtime, "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    if plat.get("variant"):
        config["variant"] = plat["variant"]
    return json.dumps(config, sort_keys=True).encode()


def remove_tree(path: str) -> None:
    """rm -r that never follows a symlink out and does not mind a missing path."""
    try:
        import shutil

        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        os.unlink(path)


def open_tarball(path: str) -> BinaryIO:
    """Open a user's file for reading, with a clear line when it cannot be."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror}") from None
    if not os.path.isfile(path):
        raise BadInput(f"cannot read {path}: not a regular file (expected a tarball)")
    if st.st_size == 0:
        raise BadInput(f"cannot read {path}: the file is empty")
    try:
        return open(path, "rb")
    except OSError as e:
        raise DiyError(f"cannot read {path}: {e.strerror}") from None
