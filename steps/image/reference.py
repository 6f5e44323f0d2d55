"""Image references, as Docker reads them.

    ubuntu                     -> docker.io/library/ubuntu:latest
    team/app:1.2               -> docker.io/team/app:1.2
    localhost:5000/app         -> localhost:5000/app:latest
    ghcr.io/o/r@sha256:<hex>   -> by digest

The first path component is a registry when it has a '.' or a ':' or is
'localhost' (distribution/reference's rule). The local store keys images by the
"familiar" form (docker.io/library/ and docker.io/ left out), as `docker images`
shows them: both forms name the same image.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from steps import BadInput

DOCKER_HUB = "docker.io"
HUB_API = "registry-1.docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?)"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_HOST_RE = re.compile(_HOST)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
EXAMPLE = "expected [REGISTRY/]NAME[:TAG][@sha256:DIGEST], e.g. busybox, deb:12, localhost:5000/team/app:1.2"


class Reference(NamedTuple):
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """The familiar repository name: 'ubuntu', 'team/app', 'localhost:5000/app'."""
        if self.registry == DOCKER_HUB:
            return self.repository.removeprefix("library/")
        return f"{self.registry}/{self.repository}"

    @property
    def key(self) -> str:
        """How the local store names it: familiar name and tag (or digest)."""
        if self.digest and not self.tag:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag or 'latest'}"

    @property
    def full(self) -> str:
        tail = f":{self.tag}" if self.tag else ""
        return f"{self.registry}/{self.repository}{tail}" + (f"@{self.digest}" if self.digest else "")

    @property
    def api_host(self) -> str:
        """Where the registry's /v2/ API answers (Docker Hub's is not docker.io itself)."""
        return HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def manifest_ref(self) -> str:
        """What to ask /v2/NAME/manifests/ for: the digest when given, else the tag."""
        return self.digest or self.tag or "latest"


def parse_reference(text: str) -> Reference:
    if not isinstance(text, str) or not text or len(text) > 512 or text != text.strip():
        raise BadInput(f"bad image reference {text!r}: {EXAMPLE}")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST.fullmatch(digest):
            raise BadInput(f"bad image digest {digest!r}: expected sha256: and 64 lowercase hex digits")
    tag = None
    slash, colon = rest.rfind("/"), rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise BadInput(f"bad image tag {tag!r}: use up to 128 letters, digits, '_', '.', '-' "
                           "(not starting with '.' or '-')")
    registry, path = split_registry(rest)
    if not _PATH.fullmatch(path) or len(path) > 255:
        raise BadInput(f"bad image name {path!r}: use lowercase letters, digits and '.', '_', '-' "
                       "between them, '/' between parts (e.g. busybox, team/app)")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, path, tag, digest)


def split_registry(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _HOST_RE.fullmatch(first):
            raise BadInput(f"bad registry {first!r}: expected HOST[:PORT], e.g. localhost:5000")
        if first in ("index.docker.io", "registry-1.docker.io"):
            first = DOCKER_HUB
        return first, rest
    return DOCKER_HUB, name


def canonical(text: str) -> str:
    """The store's key for a reference the user typed."""
    return parse_reference(text).key
