"""The built-in `busybox` image: Debian's busybox-static, its applet links, a minimal /etc."""
from __future__ import annotations

import os

from steps import DiyError

BUILTIN = "busybox:latest"
PT_INTERP = 3

_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"
_DIRS = {"bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
         "etc": 0o755, "dev": 0o755, "proc": 0o555, "sys": 0o555, "tmp": 0o1777,
         "root": 0o700, "home": 0o755, "var": 0o755, "var/tmp": 0o1777, "run": 0o755}


def is_static_elf(path: str) -> bool:
    """True for an ELF executable with no PT_INTERP (no dynamic loader needed)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        order = "little" if head[5] == 1 else "big"
        phoff = int.from_bytes(head[32:40], order)
        phentsize = int.from_bytes(head[54:56], order)
        phnum = int.from_bytes(head[56:58], order)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    types = (int.from_bytes(table[i:i + 4], order) for i in range(0, len(table), phentsize))
    return PT_INTERP not in types


def applets(busybox: str) -> list[str]:
    import subprocess

    out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True)
    return sorted({line.strip() for line in out.stdout.splitlines() if line.strip()})


def paths(busybox: str) -> set[str]:
    """Every absolute path the built image will hold (to check a command before building)."""
    found = {"/" + d for d in _DIRS} | {"/bin/busybox", "/etc/passwd", "/etc/group"}
    return found | {"/" + a.strip("/") for a in applets(busybox)}


def _add(tf, name: str, kind: bytes, mode: int, data: bytes = b"", link: str = ""):
    import io
    import tarfile

    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, 0, link
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data) if data else None)


def build_tar(busybox: str):
    """A deterministic rootfs tarball (same busybox -> same diff id), an io.BytesIO.
    tarfile is imported here: `ps` and `images` never build it."""
    import io
    import tarfile

    if not os.path.isfile(busybox):
        raise DiyError(f"cannot build the busybox image: {busybox} is missing; "
                       "install it with: apt-get install busybox-static")
    if not is_static_elf(busybox):
        raise DiyError(f"cannot build the busybox image: {busybox} is dynamically linked; "
                       "install the static one with: apt-get install busybox-static")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, mode in _DIRS.items():
            _add(tf, name, tarfile.DIRTYPE, mode)
        with open(busybox, "rb") as f:
            _add(tf, "bin/busybox", tarfile.REGTYPE, 0o755, f.read())
        for path in applets(busybox):
            if path.strip("/") != "bin/busybox":
                _add(tf, path.strip("/"), tarfile.SYMTYPE, 0o777, link="/bin/busybox")
        _add(tf, "etc/passwd", tarfile.REGTYPE, 0o644, _PASSWD.encode())
        _add(tf, "etc/group", tarfile.REGTYPE, 0o644, _GROUP.encode())
    buf.seek(0)
    return buf
