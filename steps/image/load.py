"""`image.load`: docker save archives (legacy and OCI-inside forms) and OCI image
layouts (a directory or a tar), read member by member without unpacking the archive.

Names inside an archive (manifest.json's Config and Layers, blob digests) come
from the archive: they are looked up among its members, never used as host paths.
"""
from __future__ import annotations

import os
import tarfile
from typing import BinaryIO, Callable

from steps import BadInput
from steps.image.manifest import (
    Incoming,
    LayerBlob,
    kind_of,
    layer_blobs,
    load_json,
    parse_config,
    parse_json,
    parse_manifest,
    read_limited,
    verify,
)
from steps.image.platform import choose
from steps.image.reference import parse_reference
from steps.image.store import check_digest

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


class Layout:
    """Files of an OCI layout or a docker save archive, by their names inside it."""

    def __init__(self, path: str):
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if os.path.isdir(path):
            return
        try:
            self.tar = tarfile.open(path, "r:")
        except (tarfile.TarError, OSError) as e:
            raise BadInput(f"cannot load {path}: not an uncompressed tar archive nor a directory ({e})") from None
        for m in self.tar.getmembers():
            if m.isreg():
                self.members[os.path.normpath(m.name).lstrip("/")] = m

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()

    def has(self, name: str) -> bool:
        if self.tar is not None:
            return name in self.members
        return os.path.isfile(self.local(name))

    def local(self, name: str) -> str:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts or not parts:
            raise BadInput(f"bad path {name!r} inside {self.path}")
        return os.path.join(self.path, *parts)

    def open(self, name: str) -> BinaryIO:
        if self.tar is None:
            try:
                return open(self.local(name), "rb")
            except OSError as e:
                raise BadInput(f"cannot read {name} in {self.path}: {e.strerror}") from None
        member = self.members.get(os.path.normpath(name).lstrip("/"))
        if member is None:
            raise BadInput(f"{self.path} has no file {name!r} (named by its manifest)")
        return self.tar.extractfile(member)

    def read_json_file(self, name: str) -> bytes:
        with self.open(name) as f:
            return read_limited(f, f"{name} in {self.path}")

    def opener(self, name: str) -> Callable[[], BinaryIO]:
        return lambda: self.open(name)

    def blob_name(self, digest: str) -> str:
        return "blobs/sha256/" + check_digest(digest)[7:]


def load(path: str, ref: str | None) -> list[Incoming]:
    """What a docker save archive or an OCI layout holds, ready for bring_in."""
    if not os.path.exists(path):
        raise BadInput(f"cannot load {path}: no such file or directory")
    layout = Layout(path)
    if layout.has("manifest.json"):
        return docker_archive(layout, ref)
    if layout.has("index.json"):
        return oci_layout(layout, ref)
    layout.close()
    raise BadInput(f"cannot load {path}: neither a docker save archive (manifest.json) nor an OCI "
                   "layout (index.json); a flat rootfs tarball goes to image.import")


def docker_archive(layout: Layout, ref: str | None) -> list[Incoming]:
    entries = load_json_list(layout.read_json_file("manifest.json"), f"manifest.json in {layout.path}")
    if ref and len(entries) != 1:
        raise BadInput(f"--ref names one image, but {layout.path} holds {len(entries)}")
    out = []
    for i, entry in enumerate(entries):
        what = f"{layout.path} image {i + 1}"
        config_name = entry.get("Config")
        layers = entry.get("Layers")
        tags = entry.get("RepoTags") or []
        if not isinstance(config_name, str) or not isinstance(layers, list) or not isinstance(tags, list):
            raise BadInput(f"{what}: manifest.json entry needs Config, Layers and RepoTags of the right types")
        config_bytes = layout.read_json_file(config_name)
        check_named_digest(config_bytes, config_name, what)
        config = parse_config(config_bytes, f"{what} config")
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(layers) or not all(isinstance(x, str) for x in layers):
            raise BadInput(f"{what}: {len(layers)} layers but {len(diff_ids)} diff ids in its config")
        keys = [parse_reference(ref).key] if ref else [parse_reference(t).key for t in tags]
        if not keys:
            raise BadInput(f"{what} has no name (RepoTags is empty): give one with --ref NAME:TAG")
        blobs = [LayerBlob(d, layout.opener(name), blob_digest(name)) for d, name in zip(diff_ids, layers)]
        out.append(Incoming(keys, config_bytes, blobs, f"loaded from {layout.path}"))
    return out


def load_json_list(data: bytes, what: str) -> list[dict]:
    value = parse_json(data, what)
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise BadInput(f"{what}: expected a non-empty list of image entries")
    return value


def blob_digest(name: str) -> str | None:
    """The digest a member name claims (blobs/sha256/<hex> or <hex>.json), else None."""
    base = os.path.basename(name).removesuffix(".json")
    if name.startswith("blobs/sha256/") or (len(base) == 64 and name.endswith(".json")):
        return check_digest("sha256:" + base)
    return None


def check_named_digest(data: bytes, name: str, what: str) -> None:
    digest = blob_digest(name)
    if digest:
        verify(data, digest, f"{what} config {name}")


def oci_layout(layout: Layout, ref: str | None) -> list[Incoming]:
    index = load_json(layout.read_json_file("index.json"), f"index.json in {layout.path}")
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or not manifests:
        raise BadInput(f"index.json in {layout.path} lists no manifests")
    picked = pick_named(manifests, ref, layout.path)
    out = []
    for desc, key in picked:
        out.append(oci_image(layout, desc, key))
    return out


def pick_named(manifests: list, ref: str | None, path: str) -> list[tuple[dict, str]]:
    """The index entries to load and the name each is registered as."""
    named = []
    for desc in manifests:
        notes = (desc.get("annotations") or {}) if isinstance(desc, dict) else {}
        named.append((desc, notes.get(CONTAINERD_NAME) or notes.get(REF_NAME)))
    if ref:
        wanted = parse_reference(ref)
        hits = [d for d, n in named if n and (n in (wanted.tag, ref) or full_key(n) == wanted.key)]
        if not hits and len(named) == 1:
            hits = [named[0][0]]
        if len(hits) != 1:
            have = ", ".join(sorted(str(n) for _, n in named))
            raise BadInput(f"--ref {ref} matches {len(hits)} images of {path}; it has: {have}")
        return [(hits[0], wanted.key)]
    out = []
    for desc, name in named:
        key = full_key(name) if name else None
        if key is None:
            raise BadInput(f"{path}: an image is named only {name!r} (or not at all); "
                           "give its name with --ref NAME:TAG")
        out.append((desc, key))
    return out


def full_key(name: str) -> str | None:
    """A full reference from an annotation; a bare tag ('latest', '12') is not one."""
    if "/" not in name and ":" not in name:
        return None
    try:
        return parse_reference(name).key
    except BadInput:
        return None


def oci_image(layout: Layout, desc: dict, key: str) -> Incoming:
    what = f"{layout.path} {key}"
    for _ in range(4):  # an index may point at an index (one level is usual)
        data = verify(layout.read_json_file(layout.blob_name(desc.get("digest"))), desc["digest"], what)
        doc = load_json(data, f"{what} manifest")
        if kind_of(doc, desc.get("mediaType")) == "manifest":
            break
        desc = choose(doc.get("manifests") or [], what)
    else:
        raise BadInput(f"{what}: indexes nested too deep")
    manifest = parse_manifest(doc, what)
    config_bytes = verify(layout.read_json_file(layout.blob_name(manifest.config["digest"])),
                          manifest.config["digest"], f"{what} config")
    config = parse_config(config_bytes, f"{what} config")
    blobs = layer_blobs(config, manifest, lambda d: layout.opener(layout.blob_name(d)), what)
    return Incoming([key], config_bytes, blobs, f"loaded from {layout.path}",
                    {"manifest": desc["digest"]})
