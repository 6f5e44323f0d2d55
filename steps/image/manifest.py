"""Image manifests, indexes and configs: parsed, size-limited and checked before use.

Everything here comes from an image (a registry, an archive, a layout), so every
field is checked for its type and every digest as a string before it names a
path or a URL.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from steps import BadInput
from steps.image.store import Store, check_digest

MAX_JSON = 4 << 20  # manifests, indexes and configs are small; containerd's limit too

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V1 = ("application/vnd.docker.distribution.manifest.v1+json",
             "application/vnd.docker.distribution.manifest.v1+prettyjws")
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
}
ACCEPT = ", ".join(MANIFESTS + INDEXES)


def parse_json(data: bytes, what: str):
    """JSON from an image, size-limited."""
    if len(data) > MAX_JSON:
        raise BadInput(f"{what} is {len(data)} bytes, over the limit of {MAX_JSON} for image JSON")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"{what} is not valid JSON: {e}") from None


def load_json(data: bytes, what: str) -> dict:
    value = parse_json(data, what)
    if not isinstance(value, dict):
        raise BadInput(f"{what} is not a JSON object")
    return value


def read_limited(f: BinaryIO, what: str) -> bytes:
    data = f.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise BadInput(f"{what} is over the limit of {MAX_JSON} bytes for image JSON")
    return data


def check_hash(sha, digest: str, what: str) -> None:
    """Refuse content whose sha256 is not the digest that names it."""
    got = "sha256:" + sha.hexdigest()
    if got != digest:
        raise BadInput(f"{what}: digest mismatch, expected {digest}, got {got}")


def verify(data: bytes, digest: str, what: str) -> bytes:
    check_digest(digest)
    check_hash(hashlib.sha256(data), digest, what)
    return data


def descriptor(value, what: str, types: tuple[str, ...] | set[str] | None = None) -> dict:
    """A content descriptor: mediaType, digest (checked as a string) and size."""
    if not isinstance(value, dict):
        raise BadInput(f"{what}: expected a descriptor object")
    check_digest(value.get("digest"))
    size = value.get("size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise BadInput(f"{what}: bad size {size!r}")
    media = value.get("mediaType")
    if types is not None and media not in types:
        raise BadInput(f"{what}: unsupported media type {media!r}")
    return value


def kind_of(doc: dict, declared: str | None) -> str:
    """index or manifest, from the declared media type or the document itself."""
    media = doc.get("mediaType") or declared or ""
    if media in DOCKER_V1 or doc.get("schemaVersion") == 1:
        raise BadInput("this is a Docker schema-1 manifest, long deprecated; "
                       "push the image again with a current Docker or skopeo")
    if media in INDEXES or (not media and "manifests" in doc):
        return "index"
    if media in MANIFESTS or (not media and "layers" in doc):
        return "manifest"
    raise BadInput(f"unsupported manifest media type {media!r}")


@dataclass
class Manifest:
    config: dict
    layers: list[dict]


def parse_manifest(doc: dict, what: str) -> Manifest:
    if doc.get("schemaVersion") != 2:
        raise BadInput(f"{what}: schemaVersion {doc.get('schemaVersion')!r}, expected 2")
    config = descriptor(doc.get("config"), f"{what} config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise BadInput(f"{what}: 'layers' is not a list")
    layers = [descriptor(ly, f"{what} layer {i}", LAYER_TYPES) for i, ly in enumerate(layers)]
    for i, layer in enumerate(layers):
        if not isinstance(layer.get("size"), int):
            raise BadInput(f"{what} layer {i}: no size (the OCI image spec requires one)")
    return Manifest(config, layers)


_RUNTIME_LISTS = ("Entrypoint", "Cmd", "Env")


def parse_config(data: bytes, what: str) -> dict:
    """An image config: rootfs.diff_ids checked, runtime fields of the right types."""
    config = load_json(data, what)
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise BadInput(f"{what}: no rootfs.diff_ids list")
    for d in rootfs["diff_ids"]:
        check_digest(d)
    runtime = config.get("config") or {}
    if not isinstance(runtime, dict):
        raise BadInput(f"{what}: 'config' is not an object")
    for key in _RUNTIME_LISTS:
        value = runtime.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise BadInput(f"{what}: {key} must be a list of strings")
    for key in ("WorkingDir", "User"):
        if runtime.get(key) is not None and not isinstance(runtime[key], str):
            raise BadInput(f"{what}: {key} must be a string")
    return config


@dataclass
class LayerBlob:
    diff_id: str
    open: Callable[[], BinaryIO]
    digest: str | None = None  # of the stored (compressed) blob, checked while reading


@dataclass
class Incoming:
    """An image ready to be brought into the store: config and how to read each layer."""
    keys: list[str]
    config_bytes: bytes
    layers: list[LayerBlob]
    source: str
    extra: dict = field(default_factory=dict)


def layer_blobs(config: dict, manifest: Manifest, opener: Callable[[str], Callable[[], BinaryIO]],
                what: str) -> list[LayerBlob]:
    diff_ids = config["rootfs"]["diff_ids"]
    if len(diff_ids) != len(manifest.layers):
        raise BadInput(f"{what}: {len(manifest.layers)} layers but {len(diff_ids)} diff ids in its config")
    return [LayerBlob(d, opener(ly["digest"]), ly["digest"]) for d, ly in zip(diff_ids, manifest.layers)]


class VerifyingReader(io.RawIOBase):
    """Reads a blob and checks its digest when the end is reached."""

    def __init__(self, raw: BinaryIO, digest: str, what: str):
        super().__init__()
        self.raw, self.digest, self.what = raw, digest, what
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        if data:
            self.sha.update(data)
            buffer[:len(data)] = data
        else:
            check_hash(self.sha, self.digest, self.what)
        return len(data)


def bring_in(store: Store, incoming: Incoming) -> dict:
    """Stage every missing layer, then register the image (see store.py)."""
    with store.bringing_in():
        return stage_and_commit(store, incoming)


def stage_and_commit(store: Store, incoming: Incoming) -> dict:
    store.clean_tmp()
    for i, layer in enumerate(incoming.layers):
        if store.has_layer(layer.diff_id):
            continue
        what = f"{incoming.source} layer {i + 1}/{len(incoming.layers)}"
        with layer.open() as raw:
            reader = io.BufferedReader(VerifyingReader(raw, layer.digest, what), 1 << 20) \
                if layer.digest else raw
            store.stage_layer(reader, layer.diff_id, what)
    return store.commit(incoming.keys, incoming.config_bytes, [ly.diff_id for ly in incoming.layers],
                        incoming.source, incoming.extra)
