"""cgroup v2 behaviour, asked from inside the container: limits, the namespace view, the device
program, sub-cgroups. They need a pure cgroup v2 host (cgroup2 on /sys/fs/cgroup with memory,
cpu and pids, no v1 hierarchy); on a hybrid host they skip, and tests/test_vm_tier.py runs
them in a VM that boots one (`python -m tests.vm` runs them by hand).

Every CLI call costs seconds under emulation, so each test asks much in few runs.
"""
from __future__ import annotations

import json
import os
import re
import tarfile
import time

import pytest

from steps.facts import mounts
from tests.probes import probe_build_fixture, probes_fixture  # noqa: F401 - the fixtures probe_build, probes

CGROUP_ROOT = "/sys/fs/cgroup"
WANTED = ("memory", "cpu", "pids")
QUIET_NET = ("--network", "none")  # nothing here needs a network; under emulation nft costs ~20 s a run


def pure_v2_problem() -> str | None:
    """What keeps this host from being pure cgroup v2, or None when it is."""
    found = mounts()
    v1 = sorted({m.mount_point for m in found if m.fstype == "cgroup"})
    if v1:
        more = f" and {len(v1) - 2} more" if len(v1) > 2 else ""
        return f"cgroup v1 hierarchies are mounted ({', '.join(v1[:2])}{more})"
    at_root = [m for m in found if m.mount_point == CGROUP_ROOT]
    if not at_root or at_root[-1].fstype != "cgroup2":
        return f"{CGROUP_ROOT} is not a cgroup2 mount"
    with open(os.path.join(CGROUP_ROOT, "cgroup.controllers")) as f:
        offered = f.read().split()
    lacking = [c for c in WANTED if c not in offered]
    if lacking:
        return f"the cgroup2 root offers no {', '.join(lacking)} controller"
    return None


PROBLEM = pure_v2_problem()
pytestmark = [
    pytest.mark.v2,
    pytest.mark.skipif(PROBLEM is not None, reason=f"needs a pure cgroup v2 host: {PROBLEM}; "
                                                   "tests/test_vm_tier.py runs these in a VM"),
]


def host_cgroup(inst, name: str) -> str:
    """The container's cgroup directory as the host sees it."""
    return os.path.join(CGROUP_ROOT, inst.cgroup_parent, name)


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def logs_until(inst, name: str, marker: str, timeout: float = 120) -> str:
    """A detached container's output, once it printed marker."""
    out = ""

    def printed() -> bool:
        nonlocal out
        out = inst.cli("logs", name, check=True).stdout
        return marker in out

    wait_for(printed, timeout, f"{marker!r} in the logs of {name}")
    return out


def device_image(inst, tmp_path, nodes: dict[str, tuple[int, int]]) -> str:
    """The busybox rootfs plus character device nodes, made with tarfile and imported."""
    from steps.image.busybox import build_tar

    base = build_tar("/bin/busybox")
    with tarfile.open(fileobj=base, mode="a") as tf:
        for path, (major, minor) in nodes.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.mode, info.devmajor, info.devminor = tarfile.CHRTYPE, 0o666, major, minor
            tf.addfile(info)
    archive = tmp_path / "devnode.tar"
    archive.write_bytes(base.getvalue())
    inst.cli("image.import", str(archive), "--name", "devnode:1", check=True, timeout=180)
    return "devnode:1"


def test_v2_memory_max_oom_kills_with_137(inst):
    p = inst.cli("run", *QUIET_NET, "--name", "oom", "--memory", "32M", "--", "/bin/sh", "-c",
                 "cat /sys/fs/cgroup/memory.max; echo start; tail /dev/zero", timeout=180)
    assert p.returncode == 137, (p.stdout, p.stderr)
    assert p.stdout.split()[:2] == [str(32 << 20), "start"], p.stdout
    [row] = json.loads(inst.cli("ps", "--all", "--json", check=True).stdout)
    assert row["state"] == "exited (137) OOM-killed" and row["oom_killed"] is True, row
    [info] = json.loads(inst.cli("inspect", "oom", check=True).stdout)
    assert info["State"]["OOMKilled"] is True and info["HostConfig"]["Memory"] == 32 << 20
    inst.cli("rm", "oom", check=True)


def test_v2_pids_max_stops_a_fork_bomb(inst):
    # the subshell forks until the limit refuses (ash gives up at the first refusal);
    # afterwards only builtins run: there is no fork left to spare
    script = ("(i=0; while [ $i -lt 20 ]; do sleep 60 & i=$((i+1)); done) 2>/fork.err; "
              "set -- /proc/[0-9]*; echo running $#; "
              "read -r line </fork.err; echo \"refused: $line\"; "
              "while read -r key n; do echo \"event $key $n\"; done </sys/fs/cgroup/pids.events")
    p = inst.cli("run", *QUIET_NET, "--name", "bomb", "--rm", "--pids-limit", "10", "--", "/bin/sh", "-c", script,
                 timeout=180)
    assert p.returncode == 0, (p.stdout, p.stderr)
    running = int(re.search(r"^running (\d+)$", p.stdout, re.MULTILINE).group(1))
    assert 2 <= running <= 10, p.stdout
    assert re.search(r"^refused: .*(can't fork|Resource temporarily unavailable)", p.stdout, re.MULTILINE), p.stdout
    events = int(re.search(r"^event max (\d+)$", p.stdout, re.MULTILINE).group(1))
    assert events >= 1, p.stdout


def test_v2_limits_read_inside(inst):
    p = inst.cli("run", *QUIET_NET, "--name", "lim", "--rm", "--memory", "64M", "--cpus", "0.5", "--pids-limit", "64",
                 "--", "/bin/sh", "-c",
                 "cd /sys/fs/cgroup; for f in cpu.max memory.max memory.swap.max pids.max; do "
                 "read -r v <$f; echo \"$f=$v\"; done", timeout=180)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout.splitlines() == ["cpu.max=50000 100000", f"memory.max={64 << 20}", "memory.swap.max=0",
                                     "pids.max=64"], p.stdout


def test_v2_cgroup_namespace_shows_only_its_own_cgroup_read_only(inst):
    script = ("cat /proc/self/cgroup; echo LIST; for f in /sys/fs/cgroup/*; do echo \"${f##*/}\"; done; "
              "echo DIRS; find /sys/fs/cgroup -mindepth 1 -type d; echo PROCS; cat /sys/fs/cgroup/cgroup.procs; "
              "echo END; grep ' /sys/fs/cgroup ' /proc/mounts; "
              "mkdir /sys/fs/cgroup/sub 2>&1; echo max 2>&1 >/sys/fs/cgroup/pids.max; echo DONE; "
              "exec sleep 1000")
    inst.cli("run", *QUIET_NET, "--name", "ns", "--detach", "--pids-limit", "50", "--", "/bin/sh", "-c", script,
             check=True, timeout=180)
    try:
        out = logs_until(inst, "ns", "DONE")
        own, _, rest = out.partition("LIST\n")
        assert own.strip() == "0::/", own
        listing, _, rest = rest.partition("DIRS\n")
        dirs, _, rest = rest.partition("PROCS\n")
        procs, _, tail = rest.partition("END\n")
        assert sorted(listing.split()) == sorted(os.listdir(host_cgroup(inst, "ns"))), listing
        assert dirs.split() == [], dirs
        assert "1" in procs.split(), procs  # its own init, in its own pid namespace
        mount_line = tail.splitlines()[0]
        assert mount_line.split()[2] == "cgroup2" and "ro" in mount_line.split()[3].split(","), mount_line
        assert tail.count("Read-only file system") == 2, tail
        assert not os.path.exists(os.path.join(host_cgroup(inst, "ns"), "sub"))
        with open(os.path.join(host_cgroup(inst, "ns"), "pids.max")) as f:
            assert f.read().strip() == "50"
    finally:
        inst.cli("rm", "--force", "ns", check=True, timeout=120)


def test_v2_device_node_shipped_in_the_image_is_refused(inst, tmp_path):
    image = device_image(inst, tmp_path, {"/kmsg-node": (1, 11)})
    p = inst.cli("run", *QUIET_NET, "--name", "dev", "--rm", "--image", image, "--", "/bin/sh", "-c",
                 "ls -l /kmsg-node; head -c1 /kmsg-node; echo rc=$?", timeout=180)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert re.match(r"c\S+ .* 1,\s+11 ", p.stdout), p.stdout  # the node is there, as shipped
    assert "rc=1" in p.stdout, (p.stdout, p.stderr)
    # the device program says EPERM; a nodev overlay, which the kernel asks first, says EACCES
    assert re.search(r"kmsg-node: (Operation not permitted|Permission denied)", p.stderr), p.stderr


def test_v2_device_program_refuses_a_node_made_inside(inst):
    # /dev is a tmpfs without nodev and Docker's list allows mknod of any node ("c *:* m"):
    # only the BPF device program stands between the container and the kernel's log
    p = inst.cli("run", *QUIET_NET, "--name", "mk", "--rm", "--", "/bin/sh", "-c",
                 "mknod /dev/kmsg-made c 1 11 && echo made; head -c1 /dev/kmsg-made; echo rc=$?; "
                 "head -c1 /dev/zero | wc -c", timeout=180)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout.split() == ["made", "rc=1", "1"], (p.stdout, p.stderr)
    assert "kmsg-made: Operation not permitted" in p.stderr, p.stderr


def test_v2_privileged_sub_cgroups_go_with_rm_force(inst):
    script = ("mkdir -p /sys/fs/cgroup/a/b/c; sleep 1000 & echo $! >/sys/fs/cgroup/a/b/c/cgroup.procs; "
              "mkdir /sys/fs/cgroup/a/side; exec sleep 1000")
    inst.cli("run", *QUIET_NET, "--name", "nest", "--detach", "--privileged", "--", "/bin/sh", "-c", script,
             check=True, timeout=180)
    deepest = os.path.join(host_cgroup(inst, "nest"), "a", "b", "c")

    def moved() -> bool:
        try:
            with open(os.path.join(deepest, "cgroup.procs")) as f:
                return bool(f.read().split())
        except FileNotFoundError:
            return False

    wait_for(moved, 120, f"a process in {deepest}")
    assert os.path.isdir(os.path.join(host_cgroup(inst, "nest"), "a", "side"))
    inst.cli("rm", "--force", "nest", check=True, timeout=120)
    assert not os.path.exists(host_cgroup(inst, "nest"))  # the leak check then proves the rest


# The attacker's probes of tests/test_escape.py, all in one default container (each run costs seconds
# here): on a pure v2 host the cgroupfs, the device program and the namespace view are v2's own.
ESCAPES = """
/probe status
/probe mount-tmpfs /mnt; /probe mount-proc /mnt; /probe mount-cgroup /mnt
/probe remount /; /probe userns
/probe sysctl-write /proc/sys/kernel/core_pattern /proc/sys/vm/swappiness
/probe masked /proc/keys /proc/timer_list /proc/kcore /sys/firmware
/probe mknod /dev/probe-kmsg c 1 11; /probe mknod /dev/probe-loop b 7 0
/probe open-dev /kmsg-node
/probe shocker /etc/hosts
/probe keyring
/probe fds
/probe remount /sys/fs/cgroup --write probe-cgroup
"""


def test_v2_default_container_blocks_the_escape_probes(probes):
    r = probes.sh(ESCAPES.replace("\n", "; ").strip("; "), timeout=300)
    assert not r.escaped, r
    info = r.info
    assert info["CapEff"] == "00000000a80425fb" and info["CapBnd"] == "00000000a80425fb", r
    assert info["Seccomp"] == "2" and info["NoNewPrivs"] == "0", r
    assert info["fds"] == "0,1,2", r
    assert len(r.blocked) >= 15, r
