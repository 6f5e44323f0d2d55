"""Safe extraction, with crafted archives: no write leaves the layer, whatever a tar says.

Each hostile archive goes through the CLI (image.import for a rootfs, image.load for
an OCI layout); the host is checked untouched after each (and the leak check runs)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile

import pytest

from tests import registry as reg
from tests.test_bad_input import assert_refused


def member(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644, pax=None, dev=(0, 0)):
    return (name, kind, data, link, mode, pax or {}, dev)


def crafted(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data, link, mode, pax, dev in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname, info.pax_headers = kind, mode, link, pax
            info.devmajor, info.devminor = dev
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def layer_root(inst) -> str:
    layers = os.path.join(inst.state_root, "images", "layers")
    (only,) = os.listdir(layers)
    return os.path.join(layers, only)


@pytest.fixture
def victim(tmp_path):
    """A host directory and file an archive will try to reach."""
    d = tmp_path / "victim"
    d.mkdir()
    (d / "file").write_text("untouched\n")
    os.chmod(d, 0o700)
    return d


def host_state(victim) -> list:
    return sorted((p.name, p.stat().st_mode, p.read_bytes() if p.is_file() else b"") for p in victim.iterdir()) + [
        victim.stat().st_mode]


def import_tar(inst, tmp_path, members, name="crafted:1"):
    path = tmp_path / "crafted.tar"
    path.write_bytes(crafted(members))
    return inst.cli("image.import", str(path), "--name", name)


@pytest.mark.parametrize("members,word", [
    ([member("../evil")], "'..'"),
    ([member("a/../../evil")], "'..'"),
    ([member("link", tarfile.SYMTYPE, link="VICTIM"), member("link/evil", data=b"x")], "symlink"),
    ([member("link", tarfile.SYMTYPE, link="VICTIM"), member("link/sub/evil", data=b"x")], "symlink"),
    ([member("f", data=b"x"), member("f/evil", data=b"x")], "not a directory"),
    ([member("hl", tarfile.LNKTYPE, link="VICTIM/file")], "not in this layer"),
    ([member("hl", tarfile.LNKTYPE, link="../../etc/passwd")], "'..'"),
    ([member("lnk", tarfile.SYMTYPE, link="VICTIM"), member("hl", tarfile.LNKTYPE, link="lnk/file")], "symlink"),
    ([member("d", tarfile.DIRTYPE, mode=0o755), member("hl", tarfile.LNKTYPE, link="d")], "directory"),
    ([member("etc/.wh...")], "whiteout"),
    ([member("etc/.wh.")], "whiteout"),
    ([member("lnk", tarfile.SYMTYPE, link="VICTIM"), member("lnk/.wh.file")], "not a directory of this layer"),
    ([member("lnk", tarfile.SYMTYPE, link="VICTIM"), member("lnk/.wh..wh..opq")], "not a directory of this layer"),
])
def test_hostile_members_are_refused(inst, tmp_path, victim, members, word):
    members = [(n, k, d, link.replace("VICTIM", str(victim)), m, p, dv) for n, k, d, link, m, p, dv in members]
    before = host_state(victim)
    path = tmp_path / "evil.tar"
    path.write_bytes(crafted(members))
    msg = assert_refused(inst, ["image.import", str(path), "--name", "evil"], [word])
    assert "tar member" in msg or "whiteout" in msg
    assert host_state(victim) == before


def test_a_hardlink_to_a_symlink_never_reaches_its_target(inst, tmp_path, victim):
    """libarchive would chmod (and write) through the link: refused before it is made."""
    os.chmod(victim / "file", 0o600)
    before = host_state(victim)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        link = tarfile.TarInfo("a")
        link.type, link.linkname = tarfile.SYMTYPE, str(victim / "file")
        tf.addfile(link)
        hard = tarfile.TarInfo("b")
        hard.type, hard.linkname, hard.mode, hard.size = tarfile.LNKTYPE, "a", 0o4777, 1
        tf.addfile(hard, io.BytesIO(b"x"))
    path = tmp_path / "hl.tar"
    path.write_bytes(buf.getvalue())
    assert_refused(inst, ["image.import", str(path), "--name", "hl"], ["hardlink to a symlink"])
    assert host_state(victim) == before


def test_absolute_paths_are_contained(inst, tmp_path, victim):
    before = host_state(victim)
    members = [member(f"{victim}/file", data=b"inside\n"), member("/abs", data=b"a")]
    import_tar(inst, tmp_path, members).check_returncode()
    root = layer_root(inst)
    assert open(os.path.join(root, str(victim).lstrip("/"), "file")).read() == "inside\n"
    assert os.path.exists(os.path.join(root, "abs"))
    assert host_state(victim) == before
    inst.cli("rmi", "crafted:1", check=True)


def test_symlink_then_file_replaces_the_link(inst, tmp_path, victim):
    before = host_state(victim)
    import_tar(inst, tmp_path, [member("x", tarfile.SYMTYPE, link=f"{victim}/file"),
                                member("x", data=b"mine\n")]).check_returncode()
    x = os.path.join(layer_root(inst), "x")
    assert stat.S_ISREG(os.lstat(x).st_mode) and open(x).read() == "mine\n"
    assert host_state(victim) == before
    inst.cli("rmi", "crafted:1", check=True)


def test_symlinks_may_point_anywhere_and_devices_and_setuid_are_kept(inst, tmp_path):
    import_tar(inst, tmp_path, [
        member("abs", tarfile.SYMTYPE, link="/etc/passwd"), member("up", tarfile.SYMTYPE, link="../../../x"),
        member("bin/su", data=b"#!/bin/sh\n", mode=0o4755), member("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        member("a", data=b"1"), member("b", tarfile.LNKTYPE, link="a"),
    ]).check_returncode()
    root = layer_root(inst)
    assert os.readlink(os.path.join(root, "abs")) == "/etc/passwd"
    assert os.readlink(os.path.join(root, "up")) == "../../../x"
    assert os.stat(os.path.join(root, "bin/su")).st_mode & 0o7777 == 0o4755
    dev = os.lstat(os.path.join(root, "dev/null"))
    assert stat.S_ISCHR(dev.st_mode) and (os.major(dev.st_rdev), os.minor(dev.st_rdev)) == (1, 3)
    assert os.stat(os.path.join(root, "a")).st_ino == os.stat(os.path.join(root, "b")).st_ino
    inst.cli("rmi", "crafted:1", check=True)


def test_overlay_xattrs_are_dropped_others_kept(inst, tmp_path):
    pax = {"SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.trusted.overlay.redirect": "/etc",
           "SCHILY.xattr.user.keep": "yes"}
    import_tar(inst, tmp_path, [member("d", tarfile.DIRTYPE, mode=0o755, pax=pax),
                                member("f", data=b"x", pax=pax)]).check_returncode()
    root = layer_root(inst)
    for name in ("d", "f"):
        attrs = os.listxattr(os.path.join(root, name))
        assert not [a for a in attrs if a.startswith("trusted.overlay.")], attrs
        assert os.getxattr(os.path.join(root, name), "user.keep") == b"yes"
    inst.cli("rmi", "crafted:1", check=True)


def test_whiteouts_become_overlay_form_whatever_their_order(inst, tmp_path):
    import_tar(inst, tmp_path, [member("etc/.wh.gone"), member("etc/kept", data=b"k"),
                                member("var/.wh..wh..opq"), member("var/new", data=b"n"),
                                member("mine/.wh.x"), member("mine/x", data=b"this layer's own"),
                                member(".wh..wh.plnk")]).check_returncode()
    root = layer_root(inst)
    gone = os.lstat(os.path.join(root, "etc/gone"))
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(os.path.join(root, "var"), "trusted.overlay.opaque") == b"y"
    assert open(os.path.join(root, "mine/x")).read() == "this layer's own"
    assert not [n for n in os.listdir(root) if n.startswith(".wh.")]
    inst.cli("rmi", "crafted:1", check=True)


def test_an_inflating_layer_is_stopped(inst, tmp_path):
    bomb = gzip.compress(crafted([member("zeros", data=bytes(8 << 20))]), 9)
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(bomb)
    assert len(bomb) < 100_000
    p = inst.cli("image.import", str(path), "--name", "bomb", env={"DIY_DOCKER_MAX_LAYER_BYTES": "1000000"})
    assert p.returncode != 0 and "inflates past the limit of 1000000 bytes" in p.stderr
    assert not os.path.exists(os.path.join(inst.state_root, "images", "layers"))


def test_a_plain_layer_past_the_limit_is_refused_before_anything_is_written(inst, tmp_path):
    path = tmp_path / "big.tar"
    path.write_bytes(crafted([member("zeros", data=bytes(2 << 20))]))
    p = inst.cli("image.import", str(path), "--name", "big", env={"DIY_DOCKER_MAX_LAYER_BYTES": "1000000"})
    assert p.returncode != 0 and "past the limit of 1000000 bytes" in p.stderr
    assert not os.path.exists(os.path.join(inst.state_root, "images", "layers"))


def many_files(n=300, size=40_000) -> list:
    """A directory of n files of size bytes each."""
    return [member("d", tarfile.DIRTYPE, mode=0o755)] + [
        member(f"d/f{i}", data=bytes([i % 251]) * size, mode=0o600 + i % 8) for i in range(n)]


def test_a_plain_tar_lands_as_in_member_order(inst, tmp_path, victim):
    """A plain tar of many members (libarchive reads the file itself, hashed beside it) lands as
    written: a later member over an earlier file (a file, a symlink), a hardlink to one, paths long
    enough for libarchive to chdir, parents the tar does not list (0755)."""
    before = host_state(victim)
    deep = "/".join(["x" * 200] * 22)  # 4421 bytes: past PATH_MAX, libarchive walks it with chdir
    members = many_files() + [
        member("d/f299", data=b"second\n"),
        member("d/f298", tarfile.SYMTYPE, link=f"{victim}/file"),
        member("h", tarfile.LNKTYPE, link="d/f297"),
        member("implicit/parents/f", data=b"p"),
        *[member("/".join(["x" * 200] * i), tarfile.DIRTYPE, mode=0o755) for i in range(1, 23)],
        member(deep + "/deep", data=b"deep\n"),
        *[member(f"d/g{i}", data=b"g" * 1000) for i in range(50)],
    ]
    import_tar(inst, tmp_path, members).check_returncode()
    root = layer_root(inst)
    for i in range(298):
        st = os.stat(os.path.join(root, f"d/f{i}"))
        assert (st.st_size, st.st_mode & 0o777) == (40_000, 0o600 + i % 8), i
    assert open(os.path.join(root, "d/f250"), "rb").read() == bytes([250]) * 40_000
    assert open(os.path.join(root, "d/f299")).read() == "second\n"
    assert os.readlink(os.path.join(root, "d/f298")) == f"{victim}/file"
    assert os.stat(os.path.join(root, "h")).st_ino == os.stat(os.path.join(root, "d/f297")).st_ino
    assert os.stat(os.path.join(root, "implicit/parents")).st_mode & 0o7777 == 0o755
    fd = os.open(os.path.join(root, "x" * 200), os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(21):
            nxt = os.open("x" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open("deep", os.O_RDONLY, dir_fd=fd), "rb") as f:
            assert f.read() == b"deep\n"
    finally:
        os.close(fd)
    assert len(os.listdir(os.path.join(root, "d"))) == 350
    assert host_state(victim) == before
    inst.cli("rmi", "crafted:1", check=True)


def test_a_symlink_over_a_directory_with_files_is_refused(inst, tmp_path, victim):
    """libarchive never replaces a directory that is not empty: nothing is written through the link."""
    before = host_state(victim)
    members = [member("e", tarfile.DIRTYPE, mode=0o755), member("e/f", data=b"e"),
               member("e", tarfile.SYMTYPE, link=str(victim)), member("e/evil", data=b"x")]
    path = tmp_path / "evil.tar"
    path.write_bytes(crafted(members))
    assert_refused(inst, ["image.import", str(path), "--name", "evil"], ["tar member"])
    assert host_state(victim) == before


def test_extraction_needs_no_libarchive_c(tmp_path):
    """libarchive is bound here (steps/image/archive.py): libarchive-c's import cost 5-10 ms of
    every image command's start. A tar extracts with libarchive-c unimportable."""
    path = tmp_path / "t.tar"
    path.write_bytes(crafted([member("d", tarfile.DIRTYPE, mode=0o755), member("d/f", data=b"x")]))
    dest = tmp_path / "out"
    dest.mkdir()
    code = ("import sys; sys.modules['libarchive'] = None; from steps.image.extract import extract; "
            f"print(extract(open({str(path)!r}, 'rb'), {str(dest)!r})[0])")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert (dest / "d" / "f").read_bytes() == b"x"


# --- manifests, configs and digests in OCI layouts -----------------------------------------------


def good_layout(tmp_path) -> tuple[str, reg.BuiltImage]:
    path = str(tmp_path / "oci")
    built = reg.oci_layout(path, {"v1": reg.ImageSpec(layers=[[("file", "hello", b"hi\n")]], cmd=["/hello"])})
    return path, built["v1"]


def blob(path: str, digest: str) -> str:
    return os.path.join(path, "blobs", "sha256", digest[7:])


def rewrite_json(path: str, change) -> None:
    with open(path) as f:
        doc = json.load(f)
    change(doc)
    with open(path, "w") as f:
        json.dump(doc, f)


def test_layout_layer_digest_mismatch(inst, tmp_path):
    path, built = good_layout(tmp_path)
    layer = blob(path, built.layer_digests[0])
    data = bytearray(gzip.decompress(open(layer, "rb").read()))
    data[600:604] = b"EVIL"  # same length, different content
    open(layer, "wb").write(gzip.compress(bytes(data)))
    assert_refused(inst, ["image.load", path, "--ref", "x:1"], ["digest mismatch"])


def test_layout_config_digest_mismatch(inst, tmp_path):
    path, built = good_layout(tmp_path)
    rewrite_json(blob(path, built.config_digest), lambda c: c["config"].update(Cmd=["/evil"]))
    assert_refused(inst, ["image.load", path, "--ref", "x:1"], ["digest mismatch"])


@pytest.mark.parametrize("bad", ["sha256:../../../../etc/passwd", "sha256:" + "A" * 64, "md5:abc", "sha256:12", 7])
def test_bad_digest_strings(inst, tmp_path, bad):
    path, _ = good_layout(tmp_path)
    rewrite_json(os.path.join(path, "index.json"), lambda i: i["manifests"][0].update(digest=bad))
    assert_refused(inst, ["image.load", path, "--ref", "x:1"], ["bad digest"])


def test_oversized_json(inst, tmp_path):
    path, _ = good_layout(tmp_path)
    rewrite_json(os.path.join(path, "index.json"), lambda i: i.update(padding="x" * (5 << 20)))
    assert_refused(inst, ["image.load", path, "--ref", "x:1"], ["limit"])


def test_schema1_manifests_are_refused(inst, tmp_path):
    path, _ = good_layout(tmp_path)
    data = json.dumps({"schemaVersion": 1, "name": "x", "tag": "v1", "fsLayers": []}).encode()
    digest = reg.write_blob(path, data)
    rewrite_json(os.path.join(path, "index.json"), lambda i: i["manifests"][0].update(
        digest=digest, size=len(data), mediaType="application/vnd.docker.distribution.manifest.v1+json"))
    assert_refused(inst, ["image.load", path, "--ref", "x:1"], ["schema-1"])


def test_not_an_archive(inst, tmp_path):
    (tmp_path / "junk").write_bytes(b"junk" * 1000)
    assert_refused(inst, ["image.load", str(tmp_path / "junk")], ["not an uncompressed tar archive"])
    (tmp_path / "empty").mkdir()
    assert_refused(inst, ["image.load", str(tmp_path / "empty")], ["neither a docker save archive"])
