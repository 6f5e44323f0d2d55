"""Running out: a state root on a small tmpfs filled by an import, a pull, a run and a container's
own writes. Each ends in one line naming what ran out and where, gives its space back at once,
leaves no temp file, and the same command works once there is room again."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import time

import pytest

from tests import host
from tests import registry as reg

MB = 1 << 20
ONE_LINE_FULL = re.compile(r"^diy-docker: no space left on (\S+) \(tmpfs, 24 MB, \d+ [KM]B free\) while (.+)$")


class Small:
    """The instance's state root as a 24 MB tmpfs."""

    def __init__(self, path: str):
        self.path = path

    def used(self) -> int:
        vfs = os.statvfs(self.path)
        return (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize

    def grow(self, size: str = "200m") -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", self.path], check=True)

    def leftovers(self) -> list[str]:
        """Temp files, partial work and empty container directories: nothing of the kind may stay."""
        found = []
        images = os.path.join(self.path, "images")
        for sub in ("tmp", "staged", "blobs/sha256"):
            d = os.path.join(images, sub)
            found += [os.path.join(d, n) for n in os.listdir(d)] if os.path.isdir(d) else []
        for dirpath, _, files in os.walk(self.path):
            found += [os.path.join(dirpath, f) for f in files if ".tmp-" in f]
        return found


@pytest.fixture
def small(inst):
    os.makedirs(inst.state_root, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "diyt-small", inst.state_root], check=True)
    try:
        yield Small(inst.state_root)
    finally:
        for name in inst.containers():
            inst.cli("teardown", name, timeout=60)
        left = host.instance_files(inst.state_root, inst.run_root)  # seen before the tmpfs goes
        subprocess.run(["umount", inst.state_root], check=True)
    assert not left, left


def one_line(proc) -> re.Match:
    """The failure's only line, as the full-disk line it must be."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and "Write failed" not in proc.stderr, proc.stderr
    match = ONE_LINE_FULL.match(lines[-1])
    assert match, proc.stderr
    assert all(not line.startswith("diy-docker:") for line in lines[:-1]), proc.stderr
    return match


def rootfs_tar(path: str, random_mb: int = 0, zero_mb: int = 0) -> str:
    """A flat rootfs with busybox and that many MB of random (incompressible) or zero bytes."""
    with tarfile.open(path, "w") as tar:
        tar.add("/bin/busybox", "bin/busybox")
        for i in range(random_mb):
            info = tarfile.TarInfo(f"data/r{i}")
            info.size = MB
            tar.addfile(info, _Bytes(os.urandom(MB)))
        if zero_mb:
            info = tarfile.TarInfo("data/zeros")
            info.size = zero_mb * MB
            tar.addfile(info, _Bytes(bytes(zero_mb * MB)))
    return path


class _Bytes:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def read(self, n: int = -1) -> bytes:
        n = len(self.data) - self.at if n < 0 else n
        chunk = self.data[self.at:self.at + n]
        self.at += len(chunk)
        return chunk


def fill(path: str) -> str:
    """A file that takes every free byte of path's file system."""
    filler = os.path.join(path, "filler")
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(bytes(MB))
                f.flush()
        except OSError:
            pass
    return filler


def test_an_import_larger_than_the_disk_fails_clean_then_works(inst, small, tmp_path):
    tar = rootfs_tar(str(tmp_path / "big.tar"), random_mb=30)
    before = small.used()
    match = one_line(inst.cli("image.import", tar, "big:1"))
    assert match.group(1) == inst.state_root
    assert re.fullmatch(r"unpacking the layer imported from .*big\.tar \(needs about \d+ MB more\)", match.group(2))
    more = int(re.search(r"needs about (\d+) MB more", match.group(2)).group(1))
    assert 4 <= more <= 12, match.group(2)  # ~31 MB of layer on a 24 MB disk
    assert small.leftovers() == []
    assert small.used() <= before + 64 * 1024  # the partial layer went at once, not at a prune
    assert json.loads(inst.cli("images", "--json", check=True).stdout) == []
    small.grow()
    inst.cli("image.import", tar, "big:1", check=True)
    out = inst.cli("run", "--rm", "--network", "none", "--image", "big:1", "--", "/bin/busybox", "echo", "ok",
                   check=True)
    assert out.stdout == "ok\n"
    inst.cli("rmi", "big:1", check=True)


@pytest.mark.skipif(not shutil.which(reg.REGISTRY_BIN) or not shutil.which("skopeo"),
                    reason="needs Debian's docker-registry and skopeo")
def test_a_pull_that_does_not_fit_gives_its_space_back(inst, small, tmp_path):
    with reg.Registry(str(tmp_path / "registry")) as registry:
        zeros = [("dir", "bin"), ("file", "bin/busybox", open("/bin/busybox", "rb").read(), 0o755),
                 ("file", "zeros", bytes(30 * MB))]  # gzip makes it ~30 KB: it downloads, then cannot unpack
        layout = str(tmp_path / "layout")
        reg.oci_layout(layout, {"z": reg.ImageSpec(layers=[zeros]), "r": reg.ImageSpec(
            layers=[[("file", "random", os.urandom(30 * MB))]])})  # incompressible: the download fills the disk
        reg.push(layout, "z", registry, "team/zeros:1")
        reg.push(layout, "r", registry, "team/random:1")
        before = small.used()
        match = one_line(inst.cli("pull", f"{registry.host}/team/zeros:1", timeout=120))
        assert re.fullmatch(r"unpacking layer sha256:[0-9a-f]{64} \(.*team/zeros:1 layer 1/1\) "
                            r"\(needs about \d+ MB more\)", match.group(2)), match.group(2)
        assert small.leftovers() == [] and small.used() <= before + 64 * 1024
        match = one_line(inst.cli("pull", f"{registry.host}/team/random:1", timeout=120))
        assert re.fullmatch(r"downloading .*team/random:1 \(needs about \d+ MB more\)", match.group(2))
        assert small.leftovers() == [] and small.used() <= before + 64 * 1024
        assert json.loads(inst.cli("images", "--json", check=True).stdout) == []
        small.grow()
        for repo in ("zeros", "random"):
            inst.cli("pull", f"{registry.host}/team/{repo}:1", check=True, timeout=120)
            inst.cli("rmi", f"{registry.host}/team/{repo}:1", check=True)
    assert small.leftovers() == []


def test_a_run_whose_record_cannot_be_written_makes_nothing(inst, small, tmp_path):
    inst.cli("run", "--rm", "--network", "none", "--", "/bin/true", check=True)  # the busybox image, built
    filler = fill(inst.state_root)
    cid = tmp_path / "cid"
    match = one_line(inst.cli("run", "--name", "r", "--network", "none", "--cidfile", str(cid), "--", "/bin/true"))
    assert match.group(2) == "recording container r"
    assert inst.containers() == [] and not cid.exists() and small.leftovers() == []
    os.unlink(filler)
    inst.cli("run", "--name", "r", "--network", "none", "--cidfile", str(cid), "--", "/bin/true", check=True)
    inst.cli("rm", "r", check=True)


def test_a_container_that_fills_the_disk_leaves_the_tool_working(inst, small):
    inst.cli("run", "--rm", "--network", "none", "--", "/bin/true", check=True)
    before = small.used()
    inst.cli("run", "--name", "w", "--detach", "--network", "none", "--", "/bin/sh", "-c",
             "dd if=/dev/zero of=/big bs=1M; echo dd=$?; sleep 1000", check=True)
    deadline = time.monotonic() + 20
    while os.statvfs(inst.state_root).f_bavail > 16 and time.monotonic() < deadline:
        time.sleep(0.1)
    rows = json.loads(inst.cli("ps", "--all", "--json", check=True).stdout)
    assert rows[0]["state"].startswith("running")
    inst.cli("exec", "w", "--", "/bin/true", check=True)
    inst.cli("stop", "w", "--time", "1", check=True)  # its record is written from the reserve kept beside it
    rows = json.loads(inst.cli("ps", "--all", "--json", check=True).stdout)
    assert rows[0]["state"].startswith("exited"), rows
    inst.cli("rm", "w", check=True)
    assert small.used() <= before + 64 * 1024 and small.leftovers() == []
    out = inst.cli("run", "--rm", "--network", "none", "--", "/bin/echo", "room again", check=True)
    assert out.stdout == "room again\n"


def test_rm_force_works_on_a_full_disk_without_the_reserve(inst, small):
    inst.cli("run", "--name", "w", "--detach", "--network", "none", "--", "/bin/sleep", "1000", check=True)
    os.unlink(os.path.join(inst.state_root, "containers", "w", "reserve"))  # as if a write had used it
    filler = fill(inst.state_root)
    inst.cli("rm", "w", "--force", check=True)  # the no-restart mark cannot be written: removed anyway
    os.unlink(filler)
    assert inst.containers() == [] and small.leftovers() == []


@pytest.mark.parametrize("point", ["image.stage.mid", "image.apply.mid", "image.commit.mid"])
@pytest.mark.parametrize("action", ["enospc", "emfile"])
def test_import_running_out_midway_leaves_nothing(inst, tmp_path, point, action):
    tar = rootfs_tar(str(tmp_path / "r.tar"), random_mb=1)
    p = inst.cli("image.import", tar, "r:1", fault=f"{point}:{action}")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(("diy-docker: no space left on", "diy-docker: too many open files")), p.stderr
    assert Small(inst.state_root).leftovers() == []
    images = os.path.join(inst.state_root, "images")
    for sub in ("images", "layers", "l"):
        assert not os.listdir(os.path.join(images, sub)) if os.path.isdir(os.path.join(images, sub)) else True, sub
    inst.cli("image.import", tar, "r:1", check=True)
    inst.cli("rmi", "r:1", check=True)


def push_two_layers(registry, tmp_path, mb: int) -> None:
    """team/r:1: two layers of mb MB of random bytes each."""
    layout = str(tmp_path / "layout")
    reg.oci_layout(layout, {"r": reg.ImageSpec(layers=[[("file", "a", os.urandom(mb * MB))],
                                                       [("file", "b", os.urandom(mb * MB))]])})
    reg.push(layout, "r", registry, "team/r:1")


def test_a_killed_import_is_cleaned_by_the_next_store_command(inst, tmp_path):
    tar = rootfs_tar(str(tmp_path / "r.tar"), random_mb=2)
    assert inst.cli("image.import", tar, "r:1", fault="image.stage.mid:kill").returncode != 0
    tmp = os.path.join(inst.state_root, "images", "tmp")
    assert len(os.listdir(tmp)) == 1  # the killed one's unpacked layer
    other = rootfs_tar(str(tmp_path / "o.tar"))
    inst.cli("image.import", other, "o:1", check=True)  # takes the store lock: the dead work goes
    assert os.listdir(tmp) == []
    inst.cli("rmi", "o:1", check=True)


@pytest.mark.skipif(not shutil.which(reg.REGISTRY_BIN) or not shutil.which("skopeo"),
                    reason="needs Debian's docker-registry and skopeo")
def test_prune_reports_what_a_killed_pull_left(inst, tmp_path):
    with reg.Registry(str(tmp_path / "registry")) as registry:
        push_two_layers(registry, tmp_path, 3)
        p = inst.cli("pull", f"{registry.host}/team/r:1", fault="image.download.mid:kill", timeout=120)
        assert p.returncode != 0
    out = inst.cli("image.prune", check=True).stdout
    assert re.search(r"0 image\(s\), 0 layer\(s\), [1-9]\d* unfinished pull/import part\(s\) \(\d", out), out
    assert "deleted unfinished blobs/sha256/" in out
    assert Small(inst.state_root).leftovers() == []


@pytest.mark.skipif(not shutil.which(reg.REGISTRY_BIN) or not shutil.which("skopeo"),
                    reason="needs Debian's docker-registry and skopeo")
def test_a_pull_running_out_midway_leaves_nothing(inst, tmp_path):
    with reg.Registry(str(tmp_path / "registry")) as registry:
        push_two_layers(registry, tmp_path, 2)
        ref = f"{registry.host}/team/r:1"
        for fault in ("image.download.mid:enospc", "image.stage.mid:enospc", "image.commit.mid:enospc",
                      "image.download.mid:emfile", "image.commit.mid:edquot"):
            p = inst.cli("pull", ref, fault=fault, timeout=120)
            assert p.returncode != 0 and "Traceback" not in p.stderr, fault
            last = p.stderr.strip().splitlines()[-1]
            assert re.match(r"diy-docker: (no space left on|too many open files|disk quota exceeded on)", last), last
            assert Small(inst.state_root).leftovers() == [], fault
            assert json.loads(inst.cli("images", "--json", check=True).stdout) == [], fault
            layers = os.path.join(inst.state_root, "images", "layers")
            assert not os.path.isdir(layers) or os.listdir(layers) == [], fault
        inst.cli("pull", ref, check=True, timeout=120)
        inst.cli("rmi", ref, check=True)


def test_the_line_names_what_ran_out_and_where(small):
    import errno

    from steps.exhaustion import explain

    full = str(explain(OSError(errno.ENOSPC, "No space left on device", os.path.join(small.path, "x", "y")),
                       "doing it", need=30 * MB))
    assert re.fullmatch(rf"no space left on {re.escape(small.path)} \(tmpfs, 24 MB, \d+ MB free\) while doing it"
                        r" \(needs about \d MB more\)", full), full
    assert str(explain(OSError(errno.EMFILE, "Too many open files"), "x")).startswith(
        "too many open files in this process (its limit is ")
    assert str(explain(MemoryError(), "x")) == "out of memory while x"
    assert "process limit" not in str(explain(OSError(errno.ENOSPC, "x"), "x"))
    assert str(explain(OSError(errno.EAGAIN, "x"), "x")).startswith("cannot create a process or thread")


def test_a_fork_at_a_process_limit_is_one_line(inst):
    p = inst.cli("run", "--name", "f", "--network", "none", "--", "/bin/true", fault="launch.apply.mid:eagain")
    assert p.returncode == 125 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(
        "diy-docker: cannot create a process or thread (a limit on processes was reached"), p.stderr
    assert inst.containers() == []
