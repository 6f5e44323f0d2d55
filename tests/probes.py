"""The attacker's probes: tests/probes/*.c compiled static at test time and shipped in a small image.

The image (`probes:1`) is Debian's busybox-static with its applet links, plus:

    /probe          tests/probes/probe.c, static (`/probe NAME [ARGS]`; the protocol is in its header)
    /probe-suid     the same binary, owned by root with the setuid bit (04755)
    /kmsg-node      a character device 1:11 (/dev/kmsg) shipped outside /dev
    /etc/passwd     root, user (1000), nobody; /etc/group to match; /mnt, /home/user

The tarball is written with tarfile (the device node and the setuid bit live in the tar headers only),
so nothing on the host needs mknod. Everything is built once per session into a temporary directory
that is removed when the session ends. Test modules import the fixtures `probe_build` and `probes`
as probe_build_fixture and probes_fixture, so no test argument shadows an import.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field

import pytest

from steps.image.busybox import applets

SOURCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probes")
IMAGE = "probes:1"
BUSYBOX = "/bin/busybox"
USER_UID = 1000

_PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
           f"user:x:{USER_UID}:{USER_UID}:user:/home/user:/bin/sh\n"
           "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
_GROUP = f"root:x:0:\nuser:x:{USER_UID}:\nnogroup:x:65534:\n"
_DIRS = {"bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "etc": 0o755,
         "dev": 0o755, "proc": 0o555, "sys": 0o555, "tmp": 0o1777, "root": 0o700, "home": 0o755,
         "var": 0o755, "var/tmp": 0o1777, "run": 0o755, "mnt": 0o755}


# --- building ---------------------------------------------------------------------------------------


@dataclass
class Build:
    """What one session built: the probe binaries and the image tarball, all under `root`."""
    root: str
    binaries: dict[str, str] = field(default_factory=dict)  # probe name (the .c file's stem) -> path
    tarball: str = ""


def require_toolchain(work: str) -> None:
    """Skip (with the reason) where gcc or a static libc is missing."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is missing: the probes are compiled at test time (apt-get install gcc libc6-dev)")
    src = os.path.join(work, "static-check.c")
    with open(src, "w") as f:
        f.write("int main(void) { return 0; }\n")
    out = subprocess.run(["gcc", "-static", "-O2", "-o", os.path.join(work, "static-check"), src],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"gcc cannot link statically (apt-get install libc6-dev): {out.stderr.strip()[-300:]}")
    if not os.path.isfile(BUSYBOX):
        pytest.skip(f"{BUSYBOX} is missing: the probe image is built from it (apt-get install busybox-static)")


def compile_probes(work: str) -> dict[str, str]:
    """Every tests/probes/*.c as one static binary; a compile error fails loudly (it is ours)."""
    out = {}
    for name in sorted(os.listdir(SOURCES)):
        if not name.endswith(".c"):
            continue
        binary = os.path.join(work, name[:-2])
        proc = subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-o", binary,
                               os.path.join(SOURCES, name)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssertionError(f"cannot compile tests/probes/{name}:\n{proc.stderr}")
        out[name[:-2]] = binary
    return out


def _member(tf: tarfile.TarFile, name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "",
            uid: int = 0, gid: int = 0, device: tuple[int, int] | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, 0, link
    info.uid, info.gid, info.size = uid, gid, len(data)
    if device:
        info.devmajor, info.devminor = device
    tf.addfile(info, io.BytesIO(data) if data else None)


def write_image_tar(path: str, probe: str) -> None:
    """The probe image's rootfs as a tarball at path."""
    with open(probe, "rb") as f:
        probe_bytes = f.read()
    with open(BUSYBOX, "rb") as f:
        busybox_bytes = f.read()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, mode in _DIRS.items():
            _member(tf, name, tarfile.DIRTYPE, mode)
        _member(tf, "home/user", tarfile.DIRTYPE, 0o755, uid=USER_UID, gid=USER_UID)
        _member(tf, "bin/busybox", tarfile.REGTYPE, 0o755, busybox_bytes)
        for applet in applets(BUSYBOX):
            if applet.strip("/") != "bin/busybox":
                _member(tf, applet.strip("/"), tarfile.SYMTYPE, 0o777, link="/bin/busybox")
        _member(tf, "etc/passwd", tarfile.REGTYPE, 0o644, _PASSWD.encode())
        _member(tf, "etc/group", tarfile.REGTYPE, 0o644, _GROUP.encode())
        _member(tf, "probe", tarfile.REGTYPE, 0o755, probe_bytes)
        _member(tf, "probe-suid", tarfile.REGTYPE, 0o4755, probe_bytes)
        _member(tf, "kmsg-node", tarfile.CHRTYPE, 0o666, device=(1, 11))


def build(root: str) -> Build:
    require_toolchain(root)
    b = Build(root, compile_probes(root))
    b.tarball = os.path.join(root, "probes-rootfs.tar")
    write_image_tar(b.tarball, b.binaries["probe"])
    return b


_shared: dict = {"build": None, "users": 0}  # one build for every test module that asks


@pytest.fixture(scope="session", name="probe_build")
def probe_build_fixture():
    """The probes and their image tarball, built once per session; removed at its end."""
    if _shared["build"] is None:
        root = tempfile.mkdtemp(prefix="diyt-probes-")
        try:
            _shared["build"] = build(root)
        except BaseException:  # a skip (no gcc) or a compile error: nothing may stay behind
            shutil.rmtree(root, ignore_errors=True)
            raise
    _shared["users"] += 1
    try:
        yield _shared["build"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            shutil.rmtree(_shared["build"].root, ignore_errors=True)
            _shared["build"] = None


# --- running ----------------------------------------------------------------------------------------


@dataclass
class Result:
    """A probe's answer, parsed by the protocol in tests/probes/probe.c."""
    code: int
    stdout: str
    stderr: str

    def tagged(self, tag: str) -> list[str]:
        prefix = f"{tag}: "
        return [line[len(prefix):] for line in self.stdout.splitlines() if line.startswith(prefix)]

    @property
    def escaped(self) -> list[str]:
        return self.tagged("ESCAPED")

    @property
    def blocked(self) -> list[str]:
        return self.tagged("BLOCKED")

    @property
    def allowed(self) -> list[str]:
        return self.tagged("ALLOWED")

    @property
    def info(self) -> dict[str, str]:
        return dict(item.partition("=")[::2] for item in self.tagged("INFO"))

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}--- stderr (last lines)\n" + \
            "\n".join(self.stderr.splitlines()[-8:])


def assert_blocked(r: Result) -> None:
    """The probe ran (exit 0 is its own) and every operation it tried was refused."""
    assert r.code == 0 and r.blocked and not r.escaped and not r.allowed, f"not blocked:\n{r}"


def assert_escaped(r: Result) -> None:
    """The probe ran and at least one attack worked (how an opt-out is proven to open the door)."""
    assert r.code == 1 and r.escaped, f"expected an escape:\n{r}"


def assert_allowed(r: Result) -> None:
    """The probe ran and the benign operation worked (what Docker's defaults allow)."""
    assert r.code == 1 and r.allowed and not r.escaped and not r.blocked, f"expected it to work:\n{r}"


class Probes:
    """The probe image, imported into one test's instance, and containers of it."""

    def __init__(self, inst, built: Build):
        self.inst = inst
        self.build = built
        inst.cli("image.import", built.tarball, "--name", IMAGE, check=True)

    def run(self, *args: str, flags: tuple[str, ...] | list[str] = (), network: str = "none",
            binary: str = "/probe", timeout: float = 60) -> Result:
        """`binary ARGS...` in a fresh --rm container of the probe image with extra run flags."""
        return self.command([binary, *args], flags=flags, network=network, timeout=timeout)

    def sh(self, script: str, flags: tuple[str, ...] | list[str] = (), network: str = "none",
           timeout: float = 60) -> Result:
        return self.command(["/bin/sh", "-c", script], flags=flags, network=network, timeout=timeout)

    def command(self, argv: list[str], flags: tuple[str, ...] | list[str] = (), network: str = "none",
                timeout: float = 60) -> Result:
        p = self.inst.cli("run", "--rm", "--image", IMAGE, "--network", network, *flags, "--", *argv,
                          timeout=timeout)
        return Result(p.returncode, p.stdout, p.stderr)


@pytest.fixture(name="probes")
def probes_fixture(inst, probe_build) -> Probes:
    return Probes(inst, probe_build)
