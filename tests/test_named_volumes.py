"""Named and anonymous volumes, --mount, --tmpfs and --read-only, asked from inside the container."""
from __future__ import annotations

import json
import os
import stat

import pytest

from steps import BadInput


def volumes_dir(inst) -> str:
    return os.path.join(inst.state_root, "volumes")


def volumes(inst) -> list[str]:
    d = volumes_dir(inst)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def sh(inst, *flags: str, script: str, name: str = "v", check: bool = True):
    p = inst.cli("run", "--name", name, "--rm", *flags, "--", "/bin/sh", "-c", script)
    if check:
        assert p.returncode == 0, (p.stdout, p.stderr)
    return p


def test_named_volume_outlives_its_containers(inst):
    sh(inst, "--volume", "vol:/d", script="echo kept > /d/f; chown 1000:1000 /d/f")
    p = sh(inst, "--volume", "vol:/data:ro", script="cat /data/f; stat -c %u /data/f; touch /data/g; true")
    assert p.stdout.splitlines()[:2] == ["kept", "1000"]
    assert "Read-only file system" in p.stderr
    assert volumes(inst) == ["vol"] and inst.containers() == []
    assert inst.cli("volume.rm", "vol", check=True).stdout.strip() == "vol"
    assert volumes(inst) == []


def test_new_volume_is_filled_from_the_image(inst):
    p = sh(inst, "--volume", "etc:/etc", "--volume", "bin:/bin", "--volume", "tmp:/tmp",
           script="cat /etc/group | head -1; readlink /bin/ls; ls -ld /tmp | cut -c1-10")
    assert p.stdout.splitlines() == ["root:x:0:", "/bin/busybox", "drwxrwxrwt"]
    data = os.path.join(volumes_dir(inst), "{}", "_data")
    passwd = os.lstat(os.path.join(data.format("etc"), "passwd"))
    assert stat.S_IMODE(passwd.st_mode) == 0o644 and passwd.st_uid == 0
    assert os.readlink(os.path.join(data.format("bin"), "sh")) == "/bin/busybox"  # as it is, not followed
    assert stat.S_IMODE(os.stat(data.format("tmp")).st_mode) == 0o1777
    # a volume with content is not filled again
    os.unlink(os.path.join(data.format("etc"), "group"))
    sh(inst, "--volume", "etc:/etc", script="test ! -e /etc/group")
    inst.cli("volume.prune", "--all", check=True)
    assert volumes(inst) == []


def test_volume_commands(inst):
    assert inst.cli("volume.create", "--name", "web", "--label", "team=db", check=True).stdout.strip() == "web"
    again = inst.cli("volume.create", "--name", "web", check=True)
    assert again.stdout.strip() == "web" and "exists already" in again.stderr
    anon = inst.cli("volume.create", check=True).stdout.strip()
    assert len(anon) == 64 and all(c in "0123456789abcdef" for c in anon)
    assert inst.cli("volume.ls", "--quiet", check=True).stdout.split() == sorted([anon, "web"])
    table = inst.cli("volume.ls", check=True).stdout.splitlines()
    assert table[0].split() == ["DRIVER", "VOLUME", "NAME"] and "local     web" in table
    [shape] = json.loads(inst.cli("volume.inspect", "web", check=True).stdout)
    assert shape["Name"] == "web" and shape["Driver"] == "local" and shape["Scope"] == "local"
    assert shape["Labels"] == {"team": "db"} and shape["CreatedAt"]
    assert shape["Mountpoint"] == os.path.join(volumes_dir(inst), "web", "_data")
    assert [v["Name"] for v in json.loads(inst.cli("volume.ls", "--json", check=True).stdout)] == sorted([anon, "web"])
    inst.cli("volume.rm", anon, check=True)
    assert volumes(inst) == ["web"]
    inst.cli("volume.rm", "web", check=True)


def test_rm_is_refused_while_a_container_uses_the_volume(inst):
    inst.cli("run", "--name", "user", "--volume", "busy:/d", "--", "/bin/true", check=True)
    p = inst.cli("volume.rm", "busy")
    assert p.returncode == 125 and p.stderr.strip().splitlines() == [
        "diy-docker: cannot remove volume busy: volume is in use - [user]"]
    assert inst.cli("volume.rm", "--force", "busy").returncode == 125  # Docker refuses it too
    inst.cli("volume.prune", "--all", check=True)
    assert volumes(inst) == ["busy"]
    inst.cli("rm", "user", check=True)
    inst.cli("volume.rm", "busy", check=True)


def test_rm_v_removes_anonymous_volumes_and_keeps_named_ones(inst):
    inst.cli("run", "--name", "keep", "--volume", "/anon", "--volume", "named:/n", "--", "/bin/sh", "-c",
             "echo x > /anon/f", check=True)
    [anon] = [v for v in volumes(inst) if v != "named"]
    assert len(anon) == 64
    record = json.loads(open(os.path.join(inst.state_root, "containers", "keep", "info.json")).read())
    assert [v.get("anonymous") for v in record["volumes"]] == [True, False]
    inst.cli("rm", "--volumes", "keep", check=True)
    assert volumes(inst) == ["named"]
    sh(inst, "--volume", "/anon2", script="true")  # --rm removes them too
    assert volumes(inst) == ["named"]
    inst.cli("run", "--name", "plain", "--volume", "/anon3", "--", "/bin/true", check=True)
    inst.cli("rm", "plain", check=True)  # without -v they stay, as Docker
    assert len(volumes(inst)) == 2
    p = inst.cli("volume.prune", check=True)  # only the anonymous one
    assert "Deleted Volumes:" in p.stdout and "Total reclaimed space:" in p.stdout
    assert volumes(inst) == ["named"]
    inst.cli("volume.rm", "named", check=True)


def test_mount_forms(inst, tmp_path):
    (tmp_path / "f").write_text("host")
    p = sh(inst, "--mount", "type=volume,src=mv,dst=/m", "--mount", f"type=bind,source={tmp_path},target=/b,readonly",
           "--mount", "type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770",
           script="echo in > /m/x; cat /b/f; touch /b/no 2>&1; grep -E ' /(t|b) ' /proc/mounts")
    out = p.stdout
    assert "host" in out and "Read-only file system" in out
    tmpfs = [line for line in out.splitlines() if " /t " in line][0].split()
    assert tmpfs[2] == "tmpfs" and "size=1024k" in tmpfs[3] and "mode=1770" in tmpfs[3]
    assert {"nosuid", "nodev", "noexec"} <= set(tmpfs[3].split(","))
    assert open(os.path.join(volumes_dir(inst), "mv", "_data", "x")).read() == "in\n"
    assert not (tmp_path / "no").exists()
    inst.cli("volume.rm", "mv", check=True)


@pytest.mark.parametrize("flag,value,says", [
    ("--mount", "type=nfs,target=/x", "type 'nfs' must be bind, volume or tmpfs"),
    ("--mount", "type=volume,src=v", "target is missing"),
    ("--mount", "type=bind,target=/x", "a bind needs source="),
    ("--mount", "type=bind,source=/no/such/dir,target=/x", "does not exist on the host"),
    ("--mount", "type=volume,source=v,target=/x,colour=red", "unknown key 'colour'"),
    ("--mount", "type=tmpfs,target=/x,tmpfs-size=lots", "tmpfs-size 'lots'"),
    ("--mount", "type=tmpfs,target=/x,readonly=maybe", "readonly='maybe' must be true or false"),
    ("--mount", "type=bind,source=/tmp,target=/x,bind-propagation=shared", "only rprivate"),
    ("--volume", "bad name!:/x", "volume name 'bad name!'"),
    ("--volume", "vol:relative", "must be an absolute path"),
    ("--tmpfs", "/run:suid,size=1m,foo", "option 'foo'"),
    ("--tmpfs", "run", "must be an absolute path"),
])
def test_bad_mounts_are_one_line_and_make_nothing(inst, flag, value, says):
    p = inst.cli("run", "--name", "bad", flag, value, "--", "/bin/true")
    assert p.returncode == 125, (p.stdout, p.stderr)
    [line] = p.stderr.strip().splitlines()
    assert says in line and line.startswith("diy-docker: bad "), line
    assert inst.containers() == [] and volumes(inst) == []
    assert not os.path.exists(os.path.join(inst.state_root, "containers"))


@pytest.mark.parametrize("args", [("volume.inspect", "nope"), ("volume.rm", "nope"), ("volume.rm", "a/b")])
def test_unknown_volumes_are_one_line(inst, args):
    p = inst.cli(*args)
    assert p.returncode == 125
    [line] = p.stderr.strip().splitlines()
    assert "no such volume: nope" in line or "bad volume name 'a/b'" in line
    assert volumes(inst) == []


def test_read_only_root_with_a_tmpfs(inst):
    p = sh(inst, "--read-only", "--tmpfs", "/run", "--volume", "rw:/data", check=False,
           script="touch /x; echo w > /run/ok && cat /run/ok; echo d > /data/ok && cat /data/ok; "
                  "cp /bin/busybox /run/bb; /run/bb true || echo noexec; hostname > /etc/hostname && echo etc; "
                  "grep ' /run ' /proc/mounts; grep ' / ' /proc/mounts")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "touch: /x: Read-only file system" in p.stderr
    lines = p.stdout.splitlines()
    assert lines[:4] == ["w", "d", "noexec", "etc"]  # /etc/hostname stays bound, writable
    run = [line for line in lines if " /run " in line][0].split()[3].split(",")
    assert "noexec" in run and "nosuid" in run and "nodev" in run and "rw" in run
    root = [line for line in lines if " / " in line][0].split()[3].split(",")
    assert "ro" in root
    inst.cli("volume.rm", "rw", check=True)


def test_tmpfs_options_show_inside(inst):
    p = sh(inst, "--tmpfs", "/cache:size=2m,mode=1770,exec", script="grep ' /cache ' /proc/mounts")
    opts = p.stdout.split()[3].split(",")
    assert "size=2048k" in opts and "mode=1770" in opts and "noexec" not in opts and "nosuid" in opts


def test_parse_units():
    from steps.spec import differences
    from steps.storage.mount_specs import parse_mount, parse_tmpfs
    from steps.volumes import parse_volume

    class Inst:
        state_root = "/s"

    assert parse_tmpfs("/run:ro,size=64m")["ro"] is True
    assert parse_mount("type=tmpfs,dst=/t,tmpfs-size=64m", Inst)["options"] == f"size={64 << 20}"
    assert parse_mount("target=/d", Inst)["anonymous"] is True  # Docker's default type: volume
    assert parse_mount("type=volume,src=v,target=/d,volume-nocopy", Inst)["nocopy"] is True
    v = parse_volume("v:/d:ro", Inst)
    assert v == {"type": "volume", "name": "v", "source": "/s/volumes/v/_data", "target": "/d", "ro": True,
                 "anonymous": False}
    with pytest.raises(BadInput):
        parse_mount("type=bind,source=/tmp,target=/x,tmpfs-mode=700", Inst)
    a, b = parse_volume("/anon", Inst), parse_volume("/anon", Inst)
    assert a["name"] != b["name"]
    assert differences({"volumes": [a]}, {"volumes": [b]}) == []  # the same container, resumed
    old = {"volumes": [{"source": "/tmp", "target": "/t", "ro": False}]}  # a record before "type"
    assert differences(old, {"volumes": [parse_volume("/tmp:/t", Inst)]}) == []


def test_an_interrupted_fill_starts_again(inst):
    """A kill during the copy leaves the volume's "filling" marker: the next use empties it and
    fills it again, so a half copy is never taken for the volume's content."""
    inst.cli("volume.create", "--name", "half", check=True)
    data = os.path.join(volumes_dir(inst), "half", "_data")
    open(os.path.join(data, "partial"), "w").close()
    open(os.path.join(volumes_dir(inst), "half", "filling"), "w").close()
    p = sh(inst, "--volume", "half:/etc", script="ls /etc")
    assert "passwd" in p.stdout.split() and "partial" not in p.stdout.split()
    assert not os.path.exists(os.path.join(volumes_dir(inst), "half", "filling"))
    inst.cli("volume.rm", "half", check=True)


def test_fill_never_writes_through_a_symlink_in_the_volume(tmp_path):
    """A container sharing the volume may have put a symlink to the host where the fill would make
    a directory: the copy is made aside and moved in by renames, so nothing lands on the host."""
    from steps.storage.volume_fill import fill

    src, dst, host = tmp_path / "image", tmp_path / "_data", tmp_path / "host"
    (src / "aaa").mkdir(parents=True)
    (src / "aaa" / "f1").write_text("from the image")
    (src / "bbb").write_text("b")
    dst.mkdir()
    host.mkdir()
    (dst / "aaa").symlink_to(host)
    fill(str(src), str(dst), str(tmp_path / "filling"))
    assert list(host.iterdir()) == []
    assert (dst / "aaa").is_symlink() and (dst / "bbb").read_text() == "b"
    assert not (tmp_path / "filling").exists()
