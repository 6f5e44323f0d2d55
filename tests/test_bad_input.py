"""Bad input: one clear line, a non-zero exit, and the host exactly as it was."""
from __future__ import annotations

import io
import os
import tarfile

import pytest


def tree(path: str) -> list[str]:
    """Every path below path, but the instance's own lock files (kept in the runtime root)."""
    out = []
    for root, dirs, files in os.walk(path):
        out += [os.path.join(root, n) for n in dirs + files]
    allowed = ("/run", "/run/locks", "/run/locks/instance.lock")
    return sorted(p for p in out if not any(p == path + a for a in allowed))


def mount_table(inst) -> list[str]:
    """The host's mounts (only the instance's with DIY_TEST_LEAKS=instance: suites side by side)."""
    lines = open("/proc/self/mountinfo").read().splitlines()
    if os.environ.get("DIY_TEST_LEAKS") == "instance":
        lines = [ln for ln in lines if inst.root in ln or inst.cgroup_parent in ln]
    return lines


def assert_refused(inst, args, words=(), code=None):
    before_files = tree(inst.root)
    before_mounts = mount_table(inst)
    p = inst.cli(*args)
    assert p.returncode != 0, p.stdout
    if code is not None:
        assert p.returncode == code
    err = [line for line in p.stderr.splitlines() if line.startswith("diy-docker:")]
    assert len(err) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for w in words:
        assert w in err[0], err[0]
    assert tree(inst.root) == before_files
    assert mount_table(inst) == before_mounts
    return err[0]


@pytest.mark.parametrize("name", ["../x", "a/b", "", "x" * 300, "a\nb", "-lead", ".hidden", "sp ace"])
def test_bad_names(inst, name):
    assert_refused(inst, ["run", "--name", name, "--", "/bin/true"], ["bad container name"], 125)


@pytest.mark.parametrize("image", ["UPPER", "a//b", "busybox:", "busybox:-x", "bad image", ":tag", "a" * 300])
def test_bad_images(inst, image):
    assert_refused(inst, ["run", "--name", "x", "--image", image, "--", "/bin/true"], ["image"])


def test_missing_image(inst):
    """A pull that fails (no registry answers on 127.0.0.1:1) makes no container."""
    msg = assert_refused(inst, ["run", "--name", "x", "--image", "127.0.0.1:1/nothere:1", "--", "/bin/true"])
    assert "cannot reach registry 127.0.0.1:1" in msg


@pytest.mark.parametrize("spec,word", [
    ("a:b:c:d", "expected SRC:DST"), ("/tmp:rel", "absolute"), ("/tmp:/", "cannot be /"),
    ("rel/dir:/x", "volume name"), ("/tmp:/x:rx", "ro or rw"), ("/nonexistent-dir:/x", "does not exist"),
    ("/tmp:/a/../b", ".."), (":/x", "expected SRC:DST"),
])
def test_bad_volumes(inst, spec, word):
    assert_refused(inst, ["run", "--name", "x", "--volume", spec, "--", "/bin/true"], ["volume", word])


def test_duplicate_volume_target(inst):
    assert_refused(inst, ["run", "--name", "x", "--volume", "/tmp:/x", "--volume", "/var:/x", "--", "/bin/true"],
                   ["given twice"])


@pytest.mark.parametrize("flag,value,word", [
    ("--memory", "10z", "memory"), ("--memory", "-1", "memory"), ("--memory", "1k", "minimum"),
    ("--cpus", "abc", "cpus"), ("--cpus", "0", "cpus"), ("--cpus", "1000", "cpus"),
    ("--pids-limit", "-1", "pids"), ("--env", "1BAD=x", "env"), ("--workdir", "rel/dir", "workdir"),
    ("--hostname", "bad_host!", "hostname"),
])
def test_bad_flags(inst, flag, value, word):
    assert_refused(inst, ["run", "--name", "x", flag, value, "--", "/bin/true"], [word])


def test_command_not_found_touches_nothing(inst):
    inst.cli("run", "--name", "warm", "--rm", "--", "/bin/true", check=True)  # the image exists now
    assert_refused(inst, ["run", "--name", "x", "--", "/no/such/cmd"], ["command not found"], 127)


def test_name_in_use_with_different_spec(inst):
    inst.cli("run", "--name", "used", "--", "/bin/true", check=True)
    assert_refused(inst, ["run", "--name", "used", "--memory", "64M", "--", "/bin/true"],
                   ["already exists", "memory"])
    inst.cli("rm", "used", check=True)


def test_unknown_container(inst):
    for cmd in (["stop", "ghost"], ["start", "ghost"], ["rm", "ghost"], ["inspect", "ghost"]):
        assert_refused(inst, cmd, ["no such container"])


def crafted(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE or kind == tarfile.LNKTYPE:
                info.linkname = extra
                tf.addfile(info)
            else:
                data = extra or b""
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("members,word", [
    ([("../evil", tarfile.REGTYPE, b"x")], "'..'"),
    ([("a/../../evil", tarfile.REGTYPE, b"x")], "'..'"),
    ([("link", tarfile.SYMTYPE, "/tmp"), ("link/evil", tarfile.REGTYPE, b"x")], "symlink"),
    ([("hl", tarfile.LNKTYPE, "/etc/passwd")], "hardlink"),
    ([("hl", tarfile.LNKTYPE, "../../etc/passwd")], "'..'"),
])
def test_import_refuses_hostile_tarballs(inst, tmp_path, members, word):
    path = tmp_path / "evil.tar"
    path.write_bytes(crafted(members))
    msg = assert_refused(inst, ["image.import", str(path), "--name", "evil"], [word])
    assert "tar member" in msg
    assert not os.path.lexists("/tmp/evil")  # (the host's /tmp is shared: look for what the tar names)


@pytest.mark.parametrize("content,word", [(b"", "empty"), (b"not a tar at all" * 100, "tar")])
def test_import_refuses_non_tarballs(inst, tmp_path, content, word):
    path = tmp_path / "x.tar"
    path.write_bytes(content)
    assert_refused(inst, ["image.import", str(path), "--name", "x"], [word])


def test_import_of_a_directory_and_missing_file(inst, tmp_path):
    assert_refused(inst, ["image.import", str(tmp_path), "--name", "x"], ["not a regular file"])
    assert_refused(inst, ["image.import", str(tmp_path / "nope"), "--name", "x"], ["No such file"])


def test_bad_config_file(inst):
    with open(inst.env["DIY_DOCKER_CONFIG"], "w") as f:
        f.write("state_rooot: /x\n")
    assert_refused(inst, ["ps"], ["unknown config key"])
    with open(inst.env["DIY_DOCKER_CONFIG"], "w") as f:
        f.write("busybox: relative/path\n")  # (the roots come from the environment, which wins)
    assert_refused(inst, ["ps"], ["absolute"])
    with open(inst.env["DIY_DOCKER_CONFIG"], "w") as f:
        f.write("lock_timeout: [1, 2]\n")
    assert_refused(inst, ["ps"], ["whole number"])
    os.unlink(inst.env["DIY_DOCKER_CONFIG"])


def test_import_never_chmods_through_a_replaced_directory(inst, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("secret")
    os.chmod(victim, 0o600)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        d = tarfile.TarInfo("x")
        d.type, d.mode = tarfile.DIRTYPE, 0o777
        tf.addfile(d)
        sub = tarfile.TarInfo("x/y")
        sub.type, sub.mode = tarfile.DIRTYPE, 0o777
        tf.addfile(sub)
        link = tarfile.TarInfo("x")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
        tf.addfile(link)
    path = tmp_path / "swap.tar"
    path.write_bytes(buf.getvalue())
    p = inst.cli("image.import", str(path), "--name", "swap")  # refused: a full directory stays one
    assert p.returncode != 0 and "replace existing directory" in p.stderr
    assert os.stat(victim).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path).st_mode & 0o777 != 0o777


@pytest.mark.parametrize("args,word", [
    (["run", "--name", "x", "--image", "deb:12\n", "--", "/bin/true"], "image"),
    (["run", "--name", "x", "--hostname", "host\n", "--", "/bin/true"], "hostname"),
    (["run", "--name", "x", "--env", "K\n=1", "--", "/bin/true"], "env"),
    (["run", "--name", "x\n", "--", "/bin/true"], "container name"),
])
def test_trailing_newlines_are_refused(inst, args, word):
    assert_refused(inst, args, [word])


def test_stop_time_must_be_seconds(inst):
    inst.cli("run", "--name", "t", "--", "/bin/true", check=True)
    assert_refused(inst, ["stop", "t", "--time", "abc"], ["--time"])
    inst.cli("rm", "t", check=True)


def test_check_mode_of_a_stranger_makes_no_file(inst):
    before = tree(inst.root)
    for args in (["teardown", "nobody", "--check"], ["step.layers", "--name", "nobody", "--check", "--undo"]):
        assert inst.cli(*args).returncode == 0
    assert tree(inst.root) == before
