"""cgroup limits and volumes, asked from inside the container."""
from __future__ import annotations

import json
import os
import tarfile

import pytest

from steps.facts import controller_hierarchies


def hierarchy_for(controller: str):
    return controller_hierarchies((controller,)).get(controller)


def needs(controller: str):
    h = hierarchy_for(controller)
    if h is None:
        pytest.skip(f"this host has no {controller} cgroup controller (neither v1 nor v2)")
    return h


def test_memory_limit_oom_kills_with_137(inst):
    h = needs("memory")
    p = inst.cli("run", "--name", "oom", "--memory", "32M", "--", "/bin/sh", "-c",
                 "echo start; tail /dev/zero", timeout=120)
    assert p.returncode == 137, (p.stdout, p.stderr)
    assert "start" in p.stdout
    [row] = json.loads(inst.cli("ps", "--all", "--json", check=True).stdout)
    assert row["state"] == "exited (137) OOM-killed" and row["oom_killed"] is True
    [info] = json.loads(inst.cli("inspect", "oom", check=True).stdout)
    assert info["State"]["OOMKilled"] is True and info["HostConfig"]["Memory"] == 32 * 1024 * 1024
    inst.cli("rm", "oom", check=True)
    assert h.version in (1, 2)


def test_limits_are_in_the_cgroup(inst):
    mem, cpu, pids = needs("memory"), needs("cpu"), needs("pids")
    inst.cli("run", "--name", "lim", "--detach", "--memory", "64M", "--cpus", "0.5", "--pids-limit", "64",
             "--", "/bin/sleep", "1000", check=True)
    try:
        path = f"{inst.cgroup_parent}/lim"
        if mem.version == 1:
            assert open(f"{mem.root}/{path}/memory.limit_in_bytes").read().strip() == str(64 << 20)
        else:
            assert open(f"{mem.root}/{path}/memory.max").read().strip() == str(64 << 20)
        if cpu.version == 1:
            assert open(f"{cpu.root}/{path}/cpu.cfs_quota_us").read().strip() == "50000"
            assert open(f"{cpu.root}/{path}/cpu.cfs_period_us").read().strip() == "100000"
        else:
            assert open(f"{cpu.root}/{path}/cpu.max").read().strip() == "50000 100000"
        assert open(f"{pids.root}/{path}/pids.max").read().strip() == "64"
        pid = json.loads(inst.cli("ps", "--json", check=True).stdout)[0]["pid"]
        assert str(pid) in open(f"{pids.root}/{path}/cgroup.procs").read().split()
        # inside, the cgroup namespace makes the container's cgroup its root
        own = open(f"/proc/{pid}/cgroup").read()
        assert f"/{inst.cgroup_parent}/lim" in own
    finally:
        inst.cli("rm", "--force", "lim", check=True)


def test_fork_bomb_stops_at_pids_limit(inst):
    needs("pids")
    p = inst.cli("run", "--name", "bomb", "--rm", "--pids-limit", "20", "--", "/bin/sh", "-c",
                 "(i=0; while [ $i -lt 60 ]; do sleep 30 & i=$((i+1)); done) 2>/dev/null; "
                 "set -- /proc/[0-9]*; echo $#", timeout=120)  # a builtin: no fork left for ls
    assert p.returncode == 0, p.stderr
    running = int(p.stdout.split()[-1])
    assert 2 <= running <= 20


def test_v2_limits_or_reason(inst):
    hs = controller_hierarchies()
    if not any(h.version == 2 for h in hs.values()):
        pytest.skip("cgroup v2 has no memory/cpu/pids controller on this host (hybrid: they are on v1); "
                    "v2 limits are covered where a host offers them")
    test_limits_are_in_the_cgroup(inst)


def test_volume_rw_and_ro(inst, tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    (src / "f").write_text("from host\n")
    p = inst.cli("run", "--name", "vol", "--rm", "--volume", f"{src}:/data:ro", "--volume", f"{src}:/rw",
                 "--", "/bin/sh", "-c",
                 "cat /data/f; echo x > /data/new 2>/dev/null && echo WROTE-RO; "
                 "grep ' /data ' /proc/mounts | grep -q ' ro,' && echo mount-ro; echo made > /rw/made")
    assert p.returncode == 0, p.stderr
    assert "from host" in p.stdout and "mount-ro" in p.stdout and "WROTE-RO" not in p.stdout
    assert not (src / "new").exists() and (src / "made").read_text() == "made\n"


def symlink_image(inst, tmp_path, links: dict[str, str]) -> str:
    """The busybox rootfs plus the given symlinks, imported as an image."""
    from steps.image.busybox import build_tar

    base = build_tar("/bin/busybox")
    with tarfile.open(fileobj=base, mode="a") as tf:
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    path = tmp_path / "links.tar"
    path.write_bytes(base.getvalue())
    inst.cli("image.import", str(path), "--name", "links:1", check=True)
    return "links:1"


@pytest.mark.parametrize("target", ["/data", "/up", "/data/sub"])
def test_volume_target_symlinks_stay_inside(inst, tmp_path, target):
    image = symlink_image(inst, tmp_path, {"data": "/etc", "up": "../../../../../../etc"})
    src = tmp_path / "vol"
    src.mkdir()
    (src / "marker").write_text("m\n")
    host_etc = sorted(os.listdir("/etc"))
    before = open("/proc/self/mountinfo").read()
    p = inst.cli("run", "--name", "esc", "--rm", "--image", image, "--volume", f"{src}:{target}:ro",
                 "--", "/bin/sh", "-c", "cat /etc/marker /etc/sub/marker 2>/dev/null; cat /etc/passwd | head -1")
    assert p.returncode == 0, p.stderr
    # the volume landed on the container's /etc (or /etc/sub), never on the host's
    assert "m" in p.stdout.splitlines()
    assert sorted(os.listdir("/etc")) == host_etc
    assert open("/proc/self/mountinfo").read() == before


def test_volume_onto_the_root_or_twice_is_refused(inst, tmp_path):
    image = symlink_image(inst, tmp_path, {"rootlink": "/", "alias": "/tmp"})
    src = tmp_path / "v"
    src.mkdir()
    p = inst.cli("run", "--name", "r1", "--image", image, "--volume", f"{src}:/rootlink", "--", "/bin/true")
    assert p.returncode == 125 and "container's root" in p.stderr
    p = inst.cli("run", "--name", "r2", "--image", image, "--volume", f"{src}:/tmp", "--volume",
                 f"{src}:/alias", "--", "/bin/true")
    assert p.returncode == 125 and "same place" in p.stderr
    assert inst.containers() == []


def test_ro_volume_submounts_are_not_writable(inst, tmp_path):
    import subprocess

    src = tmp_path / "v"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "sub")], check=True)
    try:
        p = inst.cli("run", "--name", "ro", "--rm", "--volume", f"{src}:/data:ro", "--", "/bin/sh", "-c",
                     "touch /data/sub/x 2>/dev/null && echo WROTE; touch /data/y 2>/dev/null && echo WROTE2; true")
        assert p.returncode == 0, p.stderr
        assert "WROTE" not in p.stdout
        assert os.listdir(src / "sub") == []
    finally:
        subprocess.run(["umount", str(src / "sub")], check=True)
