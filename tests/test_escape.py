"""The attacker's suite: classic container escapes tried from inside a default container.

Every probe (tests/probes/probe.c, run from the `probes:1` image of tests/probes.py) must be BLOCKED in
a default container; where Docker has an opt-out (--privileged, --cap-add, --security-opt), the same
probe is run with it to prove the door really opens there - so a probe that is blocked for a silly
reason (a missing file, a typo) does not pass for a confinement. What Docker's defaults still allow
(ping, chown, setuid binaries, port 80, adding a user) must keep working.

Traffic goes only to containers and to an "outside" netns the test makes (as tests/test_network.py).
"""
from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import platform
import resource
import subprocess
import sys
import time
import uuid

import pytest

from tests import host
from tests.probes import (  # noqa: F401 - the two *_fixture names are the fixtures probe_build and probes
    IMAGE,
    Probes,
    Result,
    assert_allowed,
    assert_blocked,
    assert_escaped,
    probe_build_fixture,
    probes_fixture,
)
from tests.test_network import Outside

# Docker's 14 default capabilities (moby oci/caps/defaults.go) and their bits (linux/capability.h)
DOCKER_CAPS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
               "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_CHROOT": 18, "MKNOD": 27,
               "AUDIT_WRITE": 29, "SETFCAP": 31}
DOCKER_MASK = 0x00000000A80425FB
NET_ADMIN, NET_RAW = 12, 13
SECCOMP_FILTER = "2"  # /proc/self/status Seccomp: 0 off, 2 filter
UNCONFINED = ("--security-opt", "seccomp=unconfined")
KEYCTL_SYSCALL = {"x86_64": 250, "aarch64": 219, "armv7l": 311, "ppc64le": 280, "s390x": 280, "riscv64": 219}


def test_docker_mask_is_the_14_capabilities():
    assert len(DOCKER_CAPS) == 14
    assert sum(1 << bit for bit in DOCKER_CAPS.values()) == DOCKER_MASK


# --- helpers ----------------------------------------------------------------------------------------


def host_capabilities() -> int:
    """Every capability this kernel knows, within what this process may hand on (its bounding set):
    the most a --privileged container can get."""
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    bounding = next(int(line.split()[1], 16) for line in open("/proc/self/status") if line.startswith("CapBnd:"))
    return ((1 << (last + 1)) - 1) & bounding


def caps(r: Result) -> dict[str, int]:
    info = r.info
    assert r.code == 0 and "CapEff" in info, f"status probe failed:\n{r}"
    return {k: int(info[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def expected_nofile() -> tuple[int, int]:
    """Docker's RLIMIT_NOFILE is 1024:524288. Raising a hard limit above our own needs CAP_SYS_RESOURCE;
    without it (some sandboxes) the most a container can get is our own hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    can_raise = host_capabilities() & (1 << 24)  # CAP_SYS_RESOURCE
    return 1024, 524288 if can_raise or hard == resource.RLIM_INFINITY or hard >= 524288 else hard


def host_session_keyring() -> int:
    """keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0) of this process, by a raw syscall."""
    number = KEYCTL_SYSCALL.get(platform.machine())
    if number is None:
        pytest.skip(f"keyctl's syscall number on {platform.machine()} is not listed here")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    serial = libc.syscall(ctypes.c_long(number), ctypes.c_long(0), ctypes.c_long(-3), ctypes.c_long(0))
    assert serial > 0, os.strerror(ctypes.get_errno())
    return serial


def gateway(inst) -> str:
    return str(next(ipaddress.IPv4Network(inst.subnet).hosts()))


# --- capabilities, seccomp, no_new_privs, rlimits ---------------------------------------------------


def test_default_container_has_dockers_capabilities_and_seccomp(probes: Probes):
    r = probes.run("status")
    assert caps(r) == {"CapInh": 0, "CapPrm": DOCKER_MASK, "CapEff": DOCKER_MASK, "CapBnd": DOCKER_MASK,
                       "CapAmb": 0}, r
    assert r.info["Seccomp"] == SECCOMP_FILTER, r
    assert r.info["NoNewPrivs"] == "0", r  # off by default, as Docker: setuid binaries work
    soft, hard = expected_nofile()
    assert r.info["nofile"] == f"{soft}:{hard}", r


def test_privileged_has_every_capability_and_no_seccomp(probes: Probes):
    r = probes.run("status", flags=["--privileged"])
    full = host_capabilities()
    assert caps(r) == {"CapInh": 0, "CapPrm": full, "CapEff": full, "CapBnd": full, "CapAmb": 0}, r
    assert r.info["Seccomp"] == "0", r


@pytest.mark.parametrize("flags,mask", [
    (["--cap-drop", "ALL"], 0),
    (["--cap-drop", "all"], 0),
    (["--cap-add", "NET_ADMIN"], DOCKER_MASK | 1 << NET_ADMIN),
    (["--cap-add", "cap_net_admin"], DOCKER_MASK | 1 << NET_ADMIN),
    (["--cap-add", "Net_Admin"], DOCKER_MASK | 1 << NET_ADMIN),
    (["--cap-drop", "NET_RAW"], DOCKER_MASK & ~(1 << NET_RAW)),
    (["--cap-drop", "ALL", "--cap-add", "CAP_CHOWN", "--cap-add", "kill"], 1 << 0 | 1 << 5),
    (["--cap-add", "ALL"], None),  # None: every capability (host_capabilities())
], ids=["drop-ALL", "drop-all", "add-NET_ADMIN", "add-cap_net_admin", "add-Net_Admin", "drop-NET_RAW",
        "drop-ALL-add-two", "add-ALL"])
def test_cap_add_and_drop(probes: Probes, flags: list[str], mask: int | None):
    r = probes.run("status", flags=flags)
    want = host_capabilities() if mask is None else mask
    assert caps(r) == {"CapInh": 0, "CapPrm": want, "CapEff": want, "CapBnd": want, "CapAmb": 0}, r
    assert r.info["Seccomp"] == SECCOMP_FILTER, r  # capabilities are no opt-out of seccomp


def test_non_root_user_has_no_effective_capabilities(probes: Probes):
    r = probes.run("status", flags=["--user", "1000"])
    assert caps(r) == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": DOCKER_MASK, "CapAmb": 0}, r
    assert (r.info["uid"], r.info["euid"]) == ("1000", "1000"), r


def test_setuid_root_binary_still_works_for_a_user(probes: Probes):
    """Docker leaves no_new_privs off: a setuid-root binary gives euid 0 and the bounding set."""
    r = probes.run("status", flags=["--user", "1000"], binary="/probe-suid")
    assert (r.info.get("uid"), r.info.get("euid")) == ("1000", "0"), r
    assert caps(r)["CapEff"] == DOCKER_MASK, r


def test_no_new_privileges_stops_setuid(probes: Probes):
    flags = ["--user", "1000", "--security-opt", "no-new-privileges", "--security-opt", "no-new-privileges"]
    r = probes.run("status", flags=flags, binary="/probe-suid")
    assert (r.info.get("uid"), r.info.get("euid")) == ("1000", "1000"), r
    assert r.info["NoNewPrivs"] == "1" and caps(r)["CapEff"] == 0, r


def test_seccomp_unconfined_keeps_the_capability_set(probes: Probes):
    r = probes.run("status", flags=list(UNCONFINED))
    assert r.info.get("Seccomp") == "0" and caps(r)["CapEff"] == DOCKER_MASK, r


def test_custom_seccomp_profile(probes: Probes, tmp_path):
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}))
    r = probes.sh("mkdir /tmp/made 2>&1 || echo mkdir-refused; grep Seccomp: /proc/self/status; echo alive",
                  flags=["--security-opt", f"seccomp={profile}"])
    assert r.code == 0 and "mkdir-refused" in r.stdout and "Operation not permitted" in r.stdout, r
    assert "alive" in r.stdout and "Seccomp:\t2" in r.stdout, r


# --- mounts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags,escapes", [
    ([], False),
    (["--cap-add", "SYS_ADMIN", *UNCONFINED], True),
], ids=["default", "sys_admin-unconfined"])
def test_mount_tmpfs(probes: Probes, flags: list[str], escapes: bool):
    r = probes.run("mount-tmpfs", "/mnt", flags=flags)
    (assert_escaped if escapes else assert_blocked)(r)


@pytest.mark.parametrize("flags,escapes", [([], False), (["--privileged"], True)], ids=["default", "privileged"])
def test_mount_proc(probes: Probes, flags: list[str], escapes: bool):
    r = probes.run("mount-proc", "/mnt", flags=flags)
    (assert_escaped if escapes else assert_blocked)(r)


def test_mount_cgroupfs_is_blocked(probes: Probes):
    assert_blocked(probes.run("mount-cgroup", "/mnt"))  # v1 freezer and cgroup2


def test_remount_root_read_write_is_blocked(probes: Probes):
    assert_blocked(probes.run("remount", "/"))


def test_remount_sys_read_write_is_blocked(probes: Probes):
    assert_blocked(probes.run("remount", "/sys"))


def test_ro_volume_cannot_be_remounted_writable(probes: Probes, inst):
    src = os.path.join(inst.root, "ro-src")
    os.makedirs(src)
    r = probes.run("remount", "/data", "--write", "probe-was-here", flags=["--volume", f"{src}:/data:ro"])
    assert_blocked(r)
    assert os.listdir(src) == []


def test_user_namespace_cannot_be_unshared(probes: Probes):
    assert_blocked(probes.run("userns"))


# --- /proc and /sys ---------------------------------------------------------------------------------

SYSCTLS = ["/proc/sys/kernel/core_pattern", "/proc/sys/vm/swappiness"]
MASKED = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware", "/proc/acpi",
          "/proc/latency_stats", "/proc/timer_stats", "/proc/scsi", "/sys/devices/virtual/powercap"]


def test_proc_sys_write_back_is_blocked(probes: Probes):
    assert_blocked(probes.run("sysctl-write", *SYSCTLS))


def test_proc_sys_write_back_works_privileged(probes: Probes):
    r = probes.run("sysctl-write", *SYSCTLS, flags=["--privileged"])
    assert r.code == 1 and len(r.escaped) == len(SYSCTLS), r  # the very values read: nothing changes


@pytest.mark.parametrize("path", ["/proc/sysrq-trigger", "/proc/sys/kernel/core_pattern",
                                  "/proc/irq/default_smp_affinity"])
def test_read_only_proc_files_cannot_be_opened_for_writing(probes: Probes, path: str):
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist on this kernel")
    assert_blocked(probes.run("open-write", path))


def test_masked_paths_read_empty(probes: Probes):
    r = probes.run("masked", *MASKED)
    assert_blocked(r)
    assert len(r.blocked) == len(MASKED), r


def test_privileged_has_no_masked_paths(probes: Probes):
    if not os.path.exists("/proc/timer_list"):
        pytest.skip("/proc/timer_list does not exist on this kernel")
    assert_escaped(probes.run("masked", "/proc/timer_list", flags=["--privileged"]))


def test_sys_and_proc_sys_are_mounted_read_only(probes: Probes):
    r = probes.sh("awk '$5 == \"/sys\" || $5 == \"/proc/sys\" {print $5, $6}' /proc/self/mountinfo")
    mounts = dict(line.split() for line in r.stdout.splitlines())
    assert r.code == 0 and set(mounts) == {"/sys", "/proc/sys"}, r
    assert all(opts.split(",")[0] == "ro" for opts in mounts.values()), r


def test_privileged_sys_is_writable(probes: Probes):
    r = probes.sh("awk '$5 == \"/sys\" {print $6}' /proc/self/mountinfo", flags=["--privileged"])
    assert r.code == 0 and r.stdout.split(",")[0] == "rw", r


# --- devices ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("node", [
    ("/dev/probe-kmsg", "c", "1", "11"),   # /dev/kmsg: made (CAP_MKNOD, "c *:* m"), never opened
    ("/dev/probe-loop", "b", "7", "0"),    # /dev/loop0
    ("/tmp/probe-null", "c", "1", "3"),    # allowed by the cgroup, but the overlay is nodev
], ids=["kmsg-in-dev", "loop0-in-dev", "null-on-overlay"])
def test_device_nodes_cannot_be_opened(probes: Probes, node: tuple[str, str, str, str]):
    r = probes.run("mknod", *node)
    assert_blocked(r)


def test_allowed_devices_still_open(probes: Probes):
    r = probes.sh("mknod /dev/null2 c 1 3 && echo x > /dev/null2 && echo null-ok; "
                  "head -c 4 /dev/urandom | wc -c; head -c 2 /dev/zero | wc -c; : > /dev/full 2>/dev/null; "
                  "test -c /dev/ptmx && echo ptmx-ok")
    assert r.code == 0 and r.stdout.split() == ["null-ok", "4", "2", "ptmx-ok"], r


def test_privileged_opens_host_devices(probes: Probes):
    r = probes.run("mknod", "/dev/probe-kmsg", "c", "1", "11", flags=["--privileged"])
    assert_escaped(r)


def test_image_shipped_device_node_cannot_be_opened(probes: Probes):
    r = probes.run("open-dev", "/kmsg-node")
    assert_blocked(r)


# --- open_by_handle_at (shocker), keyring, fds -------------------------------------------------------


@pytest.mark.parametrize("flags,escapes", [
    ([], False),
    (["--cap-add", "DAC_READ_SEARCH", *UNCONFINED], True),
], ids=["default", "dac_read_search-unconfined"])
def test_shocker(probes: Probes, flags: list[str], escapes: bool):
    """/etc/hostname is bound from the host's filesystem: a forged handle would open its root."""
    r = probes.run("shocker", "/etc/hostname", flags=flags, network="bridge")
    (assert_escaped if escapes else assert_blocked)(r)


def test_keyctl_is_blocked(probes: Probes):
    assert_blocked(probes.run("keyring"))


def test_session_keyring_is_the_containers_own(probes: Probes):
    r = probes.run("keyring", flags=list(UNCONFINED))
    assert_allowed(r)
    assert int(r.info["session-keyring"]) != host_session_keyring(), r


def test_only_stdio_file_descriptors(probes: Probes):
    r = probes.run("fds")
    assert r.code == 0 and r.info.get("fds") == "0,1,2", r


# --- cgroups ----------------------------------------------------------------------------------------


def test_cgroupfs_is_read_only_and_shows_only_its_own_cgroup(probes: Probes, inst):
    script = ("cat /proc/self/cgroup; "
              "for d in /sys/fs/cgroup /sys/fs/cgroup/*; do [ -f \"$d/cgroup.procs\" ] || continue; "
              "echo HIERARCHY $d; mkdir \"$d/escape\" 2>/dev/null && echo MADE $d; done; "
              "find /sys/fs/cgroup -maxdepth 3 -type d")
    r = probes.sh(script)
    assert r.code == 0 and "HIERARCHY" in r.stdout, r
    assert "MADE" not in r.stdout, r
    assert inst.cgroup_parent not in r.stdout, r  # the host's tree (the instance's parent) is not visible
    for line in r.stdout.splitlines():
        if line[:1].isdigit() and line.count(":") >= 2:  # /proc/self/cgroup: id:controllers:path
            assert line.split(":", 2)[2] == "/", f"cgroup namespace does not hide the path: {line}\n{r}"


def test_own_cgroup_in_every_hierarchy(probes: Probes, inst):
    inst.cli("run", "--name", "own", "--detach", "--image", IMAGE, "--network", "none", "--",
             "/bin/sleep", "1000", check=True)
    try:
        [row] = json.loads(inst.cli("ps", "--json", check=True).stdout)
        lines = open(f"/proc/{row['pid']}/cgroup").read().splitlines()
    finally:
        inst.cli("rm", "--force", "own", check=True)
    want = f"/{inst.cgroup_parent}/own"
    foreign = [line for line in lines if not (line.split(":", 2)[2] + "/").startswith(want + "/")]
    assert not foreign, f"the container's init is in the host's cgroup of these hierarchies: {foreign}"


def remove_cgroup_trees(name: str) -> list[str]:
    """Brute force for a failed test: every cgroup directory called name, in any hierarchy (deepest
    first, its processes killed). Returns what it found. Only used with a name unique to the test."""
    found = []
    for root in host.cgroup_roots():
        for dirpath, dirnames, _ in os.walk(root):
            if dirpath[len(root):].count("/") > 4:
                dirnames[:] = []
            if os.path.basename(dirpath) == name:
                found.append(dirpath)
                dirnames[:] = []
    for top in found:
        host.remove_cgroup_tree(top)
    return found


NESTED_SCRIPT = """
if grep -qw freezer /proc/cgroups && mkdir -p /mnt/freezer && mount -t cgroup -o freezer none /mnt/freezer; then
  mkdir -p /mnt/freezer/{sub}/b/c && echo MOUNTED-FREEZER
fi
sleep 1000 &
for d in /sys/fs/cgroup /sys/fs/cgroup/*; do
  [ -f "$d/cgroup.procs" ] || continue
  mkdir -p "$d/{sub}/b/c" && echo NESTED "$d"
  echo $! > "$d/{sub}/b/c/cgroup.procs" 2>/dev/null  # cpuset refuses a task without cpus: fine
done
echo READY
wait
"""


def test_privileged_nested_cgroups_leave_nothing(probes: Probes, inst):
    """A privileged container makes cgroups below its own (3 deep, a process moved in) in every
    hierarchy; rm --force and teardown remove them all (the fixture's leak check proves it)."""
    sub = f"esc-{inst.id}"
    script = NESTED_SCRIPT.format(sub=sub)
    try:
        for name in ("nest1", "nest2"):
            inst.cli("run", "--name", name, "--detach", "--privileged", "--image", IMAGE, "--network",
                     "none", "--", "/bin/sh", "-c", script, check=True)
            deadline = time.monotonic() + 15
            while "READY" not in (logs := inst.cli("logs", name).stdout) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "READY" in logs and "NESTED" in logs, logs
        for root in host.cgroup_roots():  # below the container's own cgroup, in every hierarchy
            assert os.path.isdir(os.path.join(root, inst.cgroup_parent, "nest1", sub, "b", "c")), root
        inst.cli("rm", "--force", "nest1", check=True)
        inst.cli("teardown", "nest2", check=True)
        assert inst.containers() == []
    finally:
        for name in inst.containers():
            inst.cli("teardown", name)
        strays = remove_cgroup_trees(sub)
    assert not strays, f"cgroups made outside the container's own were left (removed now): {strays}"


# --- network ----------------------------------------------------------------------------------------

RECEIVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    print(peer[0], data.decode(errors="replace"), flush=True)
"""


@pytest.fixture
def outside(inst):
    o = Outside(inst)
    yield o
    o.close()


def test_spoofed_source_is_dropped(probes: Probes, inst, outside):
    """A raw socket (CAP_NET_RAW is a default) may send; only packets from the container's own lease
    leave its veth. A neighbour's address and a foreign one are dropped at the bridge."""
    port = 9001
    tag = uuid.uuid4().hex[:8]
    neighbour = str(list(ipaddress.IPv4Network(inst.subnet).hosts())[-1])
    receiver = subprocess.Popen(["ip", "netns", "exec", outside.ns, sys.executable, "-c", RECEIVER, str(port)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline().strip() == "listening"
        r = probes.sh(f"/probe spoof self {outside.ip} {port} real-{tag}; "
                      f"/probe spoof {neighbour} {outside.ip} {port} neighbour-{tag}; "
                      f"/probe spoof 198.51.100.7 {outside.ip} {port} foreign-{tag}", network="bridge")
        assert len(r.allowed) == 3, r  # all three were sent
        time.sleep(1)
    finally:
        receiver.kill()
        got = receiver.communicate()[0]
    assert f"real-{tag}" in got, f"the unspoofed packet did not arrive: {got!r}\n{r}"
    assert f"neighbour-{tag}" not in got, f"a packet with a neighbour's source address left: {got!r}"
    assert f"foreign-{tag}" not in got, f"a packet with a foreign source address left: {got!r}"


# --- bad input --------------------------------------------------------------------------------------


def bad_profiles(tmp_path) -> dict[str, str]:
    malformed = tmp_path / "malformed.json"
    malformed.write_text('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [')
    bad_action = tmp_path / "bad-action.json"
    bad_action.write_text(json.dumps({"defaultAction": "SCMP_ACT_MAYBE", "syscalls": []}))
    return {"malformed": str(malformed), "bad-action": str(bad_action), "missing": str(tmp_path / "none.json")}


@pytest.mark.parametrize("flags", [
    ["--cap-add", "NOPE"],
    ["--cap-drop", "CAP_BOGUS"],
    ["--cap-add", ""],
    ["--security-opt", "seccomp=@malformed"],
    ["--security-opt", "seccomp=@bad-action"],
    ["--security-opt", "seccomp=@missing"],
    ["--security-opt", "bogus=1"],
    ["--security-opt", "no-new-privileges-please"],
], ids=["cap-add-unknown", "cap-drop-unknown", "cap-add-empty", "seccomp-malformed", "seccomp-bad-action",
        "seccomp-missing", "security-opt-unknown", "security-opt-almost"])
def test_bad_confinement_input_is_refused(inst, tmp_path, flags: list[str]):
    for key, path in bad_profiles(tmp_path).items():
        flags = [flag.replace(f"@{key}", path) for flag in flags]
    p = inst.cli("run", "--name", "bad", *flags, "--", "/bin/true")
    assert p.returncode == 125, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert inst.containers() == []


# --- what Docker's defaults still allow -------------------------------------------------------------


def test_ping_the_gateway(probes: Probes, inst):
    r = probes.sh(f"ping -c1 -W3 {gateway(inst)} >/dev/null && echo pong", network="bridge")
    assert r.code == 0 and r.stdout.strip() == "pong", r


def test_chown(probes: Probes):
    assert_allowed(probes.run("chown", "/tmp/owned"))


def test_bind_port_80_as_root(probes: Probes):
    assert_allowed(probes.run("bind-port", "80"))


def test_add_a_user(probes: Probes):
    """`adduser -D x` where busybox has it (Debian's busybox-static has not: then by hand, the same
    privileges - files in /etc, chown of a home, setuid/setgid through su)."""
    script = ("if busybox adduser -D x 2>/dev/null; then :; else "
              "echo 'x:x:1001:1001:x:/home/x:/bin/sh' >> /etc/passwd && echo 'x:x:1001:' >> /etc/group && "
              "mkdir /home/x && chown x:x /home/x; fi && "
              "su -s /bin/sh x -c 'id -un; touch $HOME/made && echo home-ok'")
    r = probes.sh(script)
    assert r.code == 0 and r.stdout.split() == ["x", "home-ok"], r
