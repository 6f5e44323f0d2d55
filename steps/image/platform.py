"""The host's platform in OCI terms, and choosing it from an image index."""
from __future__ import annotations

import os

from steps import BadInput

# uname -m -> (GOARCH, variant), as the OCI image spec names architectures.
_ARCH = {"x86_64": ("amd64", None), "aarch64": ("arm64", "v8"), "armv7l": ("arm", "v7"),
         "armv6l": ("arm", "v6"), "i686": ("386", None), "i386": ("386", None),
         "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "riscv64": ("riscv64", None)}


def host_platform() -> dict:
    arch, variant = _ARCH.get(os.uname().machine, (os.uname().machine, None))
    return {"os": "linux", "architecture": arch, **({"variant": variant} if variant else {})}


def matches(platform: dict, want: dict) -> bool:
    if platform.get("os") != want["os"] or platform.get("architecture") != want["architecture"]:
        return False
    variant = platform.get("variant")
    # arm64 images mostly leave out "v8"; an arm image without a variant runs anywhere.
    return variant is None or variant == want.get("variant")


def choose(manifests: list[dict], what: str) -> dict:
    """The index entry for this host; a clear refusal listing what the index has."""
    want = host_platform()
    exact = [m for m in manifests if isinstance(m, dict) and matches(m.get("platform") or {}, want)]
    exact.sort(key=lambda m: (m.get("platform") or {}).get("variant") != want.get("variant"))
    if exact:
        return exact[0]
    have = sorted({describe(m.get("platform") or {}) for m in manifests if isinstance(m, dict)})
    raise BadInput(f"{what} has no image for {describe(want)}; it has: {', '.join(have) or 'none'}")


def describe(platform: dict) -> str:
    parts = [platform.get("os", "?"), platform.get("architecture", "?")]
    return "/".join(parts + ([platform["variant"]] if platform.get("variant") else []))
