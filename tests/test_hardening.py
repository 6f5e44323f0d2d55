"""Confinement asked from inside: mounts, symlinked mount points in an image, the cgroup view,
devices with --privileged, the profile in inspect. (The attacker's probes are tests/test_escape.py.)"""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import time

import pytest

from steps.image.busybox import applets
from tests.conftest import REPO


def run_out(inst, *args: str) -> str:
    p = inst.cli("run", "--rm", "--network", "none", *args, check=True)
    return p.stdout


def hostile_image(path: str) -> None:
    """busybox with the mount points an image should not be able to steer pointing elsewhere."""
    with tarfile.open(path, "w") as tar:
        def add(name: str, kind=tarfile.DIRTYPE, data: bytes = b"", link: str = "", mode: int = 0o755):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in ("bin", "etc", "tmp", "target"):
            add(d)
        with open("/bin/busybox", "rb") as f:
            add("bin/busybox", tarfile.REGTYPE, f.read())
        for applet in applets("/bin/busybox"):
            name = os.path.basename(applet)
            if name != "busybox" and f"bin/{name}" not in tar.getnames():
                add(f"bin/{name}", tarfile.SYMTYPE, link="busybox")
        add("etc/passwd", tarfile.REGTYPE, b"root:x:0:0:root:/root:/bin/sh\n", mode=0o644)
        add("proc", tarfile.SYMTYPE, link="/target")
        add("dev", tarfile.SYMTYPE, link="/target")
        add("sys", tarfile.SYMTYPE, link="../../../../../target")
        add("etc/hosts", tarfile.SYMTYPE, link="/etc/passwd")
        add("etc/resolv.conf", tarfile.SYMTYPE, link="/bin/busybox")


def test_symlinked_mount_points_in_an_image_are_replaced(inst, tmp_path):
    tar = str(tmp_path / "hostile.tar")
    hostile_image(tar)
    inst.cli("image.import", tar, "--name", "hostile:1", check=True)
    out = run_out(inst, "--image", "hostile:1", "--", "/bin/sh", "-c",
                  "ls -A /target | wc -l; head -1 /etc/passwd; grep -c localhost /etc/hosts; "
                  "test -L /proc && echo proc-link; test -d /proc/self && echo proc-real; "
                  "stat -c %F /dev/null; head -c4 /bin/busybox | tail -c3")
    lines = out.split()
    assert lines[0] == "0", out  # nothing was mounted where the links pointed
    assert "root:x:0:0:root:/root:/bin/sh" in out and "proc-real" in out and "proc-link" not in out
    assert "character" in out and out.rstrip().endswith("ELF")


def test_mounts_are_dockers(inst):
    out = run_out(inst, "--", "/bin/cat", "/proc/self/mountinfo")
    by_point = {line.split(" - ")[0].split()[4]: line for line in out.splitlines()}
    assert "nodev" in by_point["/"].split(" - ")[0]
    for point in ("/proc", "/dev/shm", "/dev/mqueue", "/sys"):
        assert {"nosuid", "nodev", "noexec"} <= set(by_point[point].split()[5].split(",")), point
    assert "ro" in by_point["/sys"].split()[5].split(",")
    assert "ro" in by_point["/proc/sys"].split()[5].split(",")
    assert "ro" in by_point["/sys/fs/cgroup"].split()[5].split(",")
    assert "ptmxmode=666" in by_point["/dev/pts"]  # its own devpts instance (the host's has ptmxmode=000)
    assert "size=65536k" in by_point["/dev"] and "mode=755" in by_point["/dev"]


def test_cgroup_namespace_shows_only_its_own_cgroups(inst):
    out = run_out(inst, "--", "/bin/sh", "-c", "cat /proc/self/cgroup; ls /sys/fs/cgroup/*/ | head -50")
    for line in out.splitlines():
        if line.count(":") >= 2 and line.split(":")[0].isdigit():
            assert line.endswith(":/"), line  # rooted at the container's own cgroup in every hierarchy
    assert inst.cgroup_parent not in out


def test_a_volume_is_nodev_and_ro_stays_ro(inst, tmp_path):
    (tmp_path / "f").write_text("host\n")
    out = run_out(inst, "--volume", f"{tmp_path}:/data:ro", "--", "/bin/sh", "-c",
                  "grep ' /data ' /proc/self/mountinfo; mount -o remount,rw /data; echo x > /data/f; "
                  "cat /data/f")
    opts = out.splitlines()[0].split()[5].split(",")
    assert "nodev" in opts and "ro" in opts
    assert (tmp_path / "f").read_text() == "host\n"


def test_privileged_sees_the_host_devices_and_writes_sys(inst):
    host_devices = {e.name for e in os.scandir("/dev")
                    if stat.S_ISCHR(e.stat(follow_symlinks=False).st_mode) or stat.S_ISBLK(e.stat().st_mode)}
    out = run_out(inst, "--privileged", "--", "/bin/sh", "-c",
                  "ls /dev; grep ' /sys ' /proc/self/mountinfo; grep -E 'Seccomp:|CapEff' /proc/self/status")
    listed = set(out.split())
    assert host_devices - {"ptmx", "console", "tty"} <= listed
    sys_line = next(line for line in out.splitlines() if " /sys " in line)
    assert sys_line.split()[5].startswith("rw")
    assert "Seccomp:\t0" in out


def test_default_devices_and_rlimit(inst):
    out = run_out(inst, "--", "/bin/sh", "-c", "ls /dev; ulimit -n; ulimit -Hn")
    words = out.split()
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue"} <= set(words)
    assert "kmsg" not in words and "mem" not in words
    assert words[-2] == "1024"
    hard = int(words[-1])
    assert hard == 524288 or hard == int(open("/proc/self/limits").read().split("Max open files")[1].split()[1])


def test_inspect_shows_the_effective_profile(inst):
    inst.cli("run", "--detach", "--network", "none", "--name", "insp", "--cap-add", "net_admin",
             "--cap-drop", "CAP_CHOWN", "--security-opt", "no-new-privileges", "--", "/bin/sleep", "30", check=True)
    try:
        security = json.loads(inst.cli("inspect", "insp", check=True).stdout)[0]["DiyDocker"]["security"]
        assert "CAP_NET_ADMIN" in security["capabilities"] and "CAP_CHOWN" not in security["capabilities"]
        assert security["no_new_privileges"] is True and security["privileged"] is False
        assert security["seccomp"] == "default" and "/proc/kcore" in security["masked_paths"]
    finally:
        inst.cli("rm", "--force", "insp", check=True)


@pytest.mark.parametrize("flags, words", [
    (("--cap-add", "CAP_BOGUS"), "--cap-add"),
    (("--cap-drop", "nothing"), "--cap-drop"),
    (("--security-opt", "apparmor=unconfined"), "--security-opt"),
    (("--security-opt", "seccomp=/nonexistent/profile.json"), "no such file"),
])
def test_bad_security_flags_make_nothing(inst, flags, words):
    p = inst.cli("run", "--name", "bad", *flags, "--", "/bin/true")
    assert p.returncode == 125
    assert words in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert inst.containers() == []


# --- found by review: what the caller hands over, and what a profile can fake ------------------------

def test_the_callers_files_are_relayed_never_handed_over(inst, tmp_path):
    secret = tmp_path / "cfg"
    secret.write_text("secret\n")
    secret.chmod(0o400)
    log = tmp_path / "log"
    log.write_text("EARLIER LOG LINE\n")
    with open(secret) as stdin, open(log, "a") as stdout:
        p = subprocess.run([sys.executable, "-m", "invoke", "run", "--rm", "--network", "none", "--interactive",
                            "--", "/bin/sh", "-c", "echo written > /proc/self/fd/0; ls -l /proc/self/fd/; cat"],
                           cwd=REPO, env=inst.env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, p.stderr
    assert secret.read_text() == "secret\n"
    out = log.read_text()
    assert out.count("EARLIER LOG LINE") == 1 and "secret" in out  # stdin's content, relayed
    assert str(tmp_path) not in out and "pipe:" in out  # fds 0-2 are our pipes, not the caller's files


def test_the_callers_groups_and_umask_stay_outside(inst):
    def as_caller():
        os.setgroups([4, 6, 27])
        os.umask(0)

    p = subprocess.run([sys.executable, "-m", "invoke", "run", "--rm", "--network", "none", "--", "/bin/sh", "-c",
                        "grep Groups /proc/self/status; umask"], cwd=REPO, env=inst.env, capture_output=True,
                       text=True, timeout=60, preexec_fn=as_caller, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    groups = p.stdout.split("Groups:")[1].split("\n")[0].split()
    assert not {"4", "6", "27"} & set(groups), p.stdout
    assert p.stdout.split()[-1] == "0022"


def test_a_profile_that_fakes_setuid_is_caught(inst, tmp_path):
    from steps.runtime.seccomp import default_profile_path

    doc = json.load(open(default_profile_path()))
    doc["syscalls"].insert(0, {"names": ["setuid", "setgid", "setgroups", "capset", "prctl"],
                               "action": "SCMP_ACT_ERRNO", "errnoRet": 0})
    with open(tmp_path / "a:b.json", "w") as f:  # a ':' in the path is part of it, not a separator
        json.dump(doc, f)
    p = inst.cli("run", "--rm", "--network", "none", "--user", "1000", "--security-opt",
                 f"seccomp={tmp_path}/a:b.json", "--", "id")
    assert p.returncode == 125 and "cannot drop privileges" in p.stderr, p.stdout + p.stderr
    assert "uid=" not in p.stdout
    assert inst.containers() == []


def test_volumes_on_dev_shm_and_etc_hosts_are_honoured(inst, tmp_path):
    shared = tmp_path / "shm"
    shared.mkdir()
    (shared / "seen").write_text("from the host\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("10.9.9.9 mine\n")
    out = run_out(inst, "--volume", f"{shared}:/dev/shm", "--volume", f"{hosts}:/etc/hosts:ro", "--",
                  "/bin/sh", "-c", "cat /dev/shm/seen; cat /etc/hosts; grep ' /dev/shm ' /proc/self/mountinfo")
    assert "from the host" in out and "10.9.9.9 mine" in out
    assert "nodev" in out.splitlines()[-1]


def test_teardown_thaws_a_container_that_froze_itself(inst):
    script = ("mkdir /sys/fs/cgroup/freezer/sub && echo $$ > /sys/fs/cgroup/freezer/sub/cgroup.procs && "
              "sleep 0.2 && echo FROZEN > /sys/fs/cgroup/freezer/sub/freezer.state; sleep 1000")
    if not os.path.isdir("/sys/fs/cgroup/freezer"):
        pytest.skip("no cgroup v1 freezer hierarchy on this host")
    inst.cli("run", "--detach", "--privileged", "--network", "none", "--name", "frozen", "--", "/bin/sh", "-c",
             script, check=True)
    time.sleep(1)
    start = time.monotonic()
    inst.cli("teardown", "frozen", check=True, timeout=60)
    assert time.monotonic() - start < 20
