"""The later flags of run (--env-file, --add-host, --dns, --init, --stop-signal, --label, --ulimit,
--shm-size, --network host, -P, --cidfile) and `port`, each asked from inside the container."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from steps import BadInput, DiyError
from tests import registry as reg
from tests.test_bad_input import tree

FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


def assert_refused(inst, args: list[str], words=(), code=None) -> str:
    """tests.test_bad_input's check, with only this instance's mounts compared: other suites may
    run beside this one (DIY_TEST_LEAKS=instance)."""
    def ours() -> list[str]:
        return [ln for ln in open("/proc/self/mountinfo") if inst.root in ln]

    before_files, before_mounts = tree(inst.root), ours()
    p = inst.cli(*args)
    assert p.returncode != 0 and (code is None or p.returncode == code), (p.stdout, p.stderr)
    err = [line for line in p.stderr.splitlines() if line.startswith("diy-docker:")]
    assert len(err) == 1 and "Traceback" not in p.stderr, p.stderr
    assert all(w in err[0] for w in words), err[0]
    assert tree(inst.root) == before_files and ours() == before_mounts
    return err[0]


def run_out(inst, *flags: str, command: tuple = ()) -> str:
    p = inst.cli("run", "--rm", *flags, "--", *command, check=True)
    return p.stdout


def record(inst, name: str) -> dict:
    with open(os.path.join(inst.state_root, "containers", name, "info.json")) as f:
        return json.load(f)


# --- pure logic -----------------------------------------------------------------------------------

def test_parsers(monkeypatch):
    from steps import runflags as rf
    from steps.ports import exposed_ports

    monkeypatch.setattr(rf, "check_within_ours", lambda *a: None)  # this host's own limits aside

    assert rf.parse_stop_signal("USR1") == rf.parse_stop_signal("sigusr1") == rf.parse_stop_signal("10") == "SIGUSR1"
    from steps.runtime.signals import signal_number

    assert signal_number(rf.parse_stop_signal(str(int(signal.SIGRTMIN) + 3))) == signal.SIGRTMIN + 3
    assert rf.parse_ulimits(["nofile=10", "core=unlimited", "nproc=5:-1"]) == [
        {"name": "nofile", "soft": 10, "hard": 10}, {"name": "core", "soft": -1, "hard": -1},
        {"name": "nproc", "soft": 5, "hard": -1}]
    assert rf.parse_shm_size("16m") == 16 << 20 and rf.parse_shm_size("512") == 512
    assert rf.parse_add_hosts(["db:10.0.0.5", "v6=2001:db8::1", "gw:host-gateway"]) == [
        ["db", "10.0.0.5"], ["v6", "2001:db8::1"], ["gw", "host-gateway"]]
    assert rf.parse_labels(["a=b", "c"]) == {"a": "b", "c": ""}
    assert exposed_ports({"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8080": {}, "9/sctp": {}}}) == [
        (53, "udp"), (80, "tcp"), (8080, "tcp")]
    for bad in (["x=1"], ["nofile=2:1"], ["nofile=a"]):
        with pytest.raises(BadInput):
            rf.parse_ulimits(bad)


def test_env_file_format(tmp_path, monkeypatch):
    from steps.runflags import parse_env_files

    f = tmp_path / "env"
    f.write_text("\ufeff# a comment\n\nA=1\n  B=\"quoted\" kept\nFROMHERE\nUNSET_HERE\nC=x=y\n")
    monkeypatch.setenv("FROMHERE", "here")
    monkeypatch.delenv("UNSET_HERE", raising=False)
    assert parse_env_files([str(f)]) == ["A=1", 'B="quoted" kept', "FROMHERE=here", "C=x=y"]
    f.write_text("A=1\nBAD KEY=2\n")
    with pytest.raises(BadInput, match="line 2"):
        parse_env_files([str(f)])


def test_auto_ports_do_not_make_another_container():
    from steps.spec import differences

    a = {"publish": [], "publish_all": True}
    b = {"publish": [{"host_port": 40000, "container_port": 80, "proto": "tcp", "auto": True}], "publish_all": True}
    assert differences(a, b) == []


def test_missing_tini_is_one_line(monkeypatch):
    from steps import runflags

    monkeypatch.setattr(runflags, "TINI", "/nonexistent/tini-static")
    with pytest.raises(DiyError, match="install tini"):
        runflags.check_init(True)


# --- from inside the container ---------------------------------------------------------------------

def test_env_file_and_env_wins(inst, tmp_path):
    f = tmp_path / "app.env"
    f.write_text("# settings\nA=from-file\nB='as is'\n\nCOPIED\n")
    out = inst.cli("run", "--rm", "--network", "none", "--env-file", str(f), "--env", "A=from-flag", "--",
                   "/bin/sh", "-c", 'echo "$A|$B|$COPIED"', env={"COPIED": "from-here"}, check=True).stdout
    assert out.strip() == "from-flag|'as is'|from-here"


def test_add_host_and_dns(inst):
    gateway = str(next(ipaddress.ip_network(inst.subnet).hosts()))
    out = run_out(inst, "--add-host", "db:10.1.2.3", "--add-host", "gw=host-gateway", "--add-host", "v6:2001:db8::7",
                  "--dns", "192.0.2.53", "--dns", "192.0.2.54", command=("/bin/sh", "-c", "cat /etc/hosts; echo ---; "
                                                                        "cat /etc/resolv.conf"))
    hosts, resolv = out.split("---")
    assert "10.1.2.3\tdb" in hosts and f"{gateway}\tgw" in hosts and "2001:db8::7\tv6" in hosts
    servers = [ln.split()[1] for ln in resolv.splitlines() if ln.startswith("nameserver")]
    assert servers == ["192.0.2.53", "192.0.2.54"]


def test_init_is_pid1_and_reaps_zombies(inst):
    script = ("tr '\\0' ' ' < /proc/1/cmdline; echo; echo sh-pid=$$; grep PPid /proc/$$/status; "
              "sh -c 'sleep 0.2 &'; sleep 1; "  # the sleep is orphaned to PID 1 and exits: reaped or a zombie
              "grep -l 'State:.*Z' /proc/[0-9]*/status || echo no-zombies")
    out = run_out(inst, "--init", "--network", "none", command=("/bin/sh", "-c", script)).splitlines()
    assert out[0].startswith("/sbin/docker-init -- /bin/sh -c")
    assert out[1] != "sh-pid=1" and out[2].split() == ["PPid:", "1"]
    assert out[-1] == "no-zombies"
    p = inst.cli("run", "--rm", "--init", "--network", "none", "--", "/bin/sh", "-c", "exit 7")
    assert p.returncode == 7  # tini passes the exit status on


def test_stop_signal_is_sent_by_stop(inst, tmp_path):
    stored = []
    got = stopped_by(inst, tmp_path / "out", "--stop-signal", "USR1",
                     before_rm=lambda: stored.append(record(inst, "sig")["stop_signal"]))
    assert got == "usr1\n"  # it left on USR1: no grace period, no SIGKILL (stopped_by times it)
    assert stored == ["SIGUSR1"]


def test_label_stored(inst):
    inst.cli("run", "--name", "lab", "--network", "none", "--label", "com.example.team=web", "--label", "tier=",
             "--", "/bin/true", check=True)
    assert record(inst, "lab")["labels"] == {"com.example.team": "web", "tier": ""}
    inst.cli("rm", "lab", check=True)


def test_ulimit_and_shm_size(inst):
    out = run_out(inst, "--network", "none", "--ulimit", "nofile=1024:2048", "--ulimit", "nproc=100",
                  "--shm-size", "16m", command=("/bin/sh", "-c", "cat /proc/self/limits; df -k /dev/shm"))
    files = next(ln for ln in out.splitlines() if ln.startswith("Max open files")).split()
    procs = next(ln for ln in out.splitlines() if ln.startswith("Max processes")).split()
    assert files[3:5] == ["1024", "2048"] and procs[2:4] == ["100", "100"]
    shm = next(ln for ln in out.splitlines() if ln.endswith("/dev/shm")).split()
    assert shm[1] == "16384"
    default = run_out(inst, "--network", "none", command=("/bin/df", "-k", "/dev/shm"))
    assert default.splitlines()[-1].split()[1] == "65536"


def test_network_host(inst):
    before = set(os.listdir("/sys/class/net"))
    p = inst.cli("run", "--rm", "--network", "host", "--publish", "18099:80", "--", "/bin/sh", "-c",
                 "readlink /proc/self/ns/net; ls /sys/class/net; echo ---; cat /etc/hosts; echo ---; hostname; "
                 "echo $HOSTNAME",
                 check=True)
    ns, hosts, hostname = p.stdout.split("---\n")
    assert ns.split()[0] == os.readlink("/proc/self/ns/net")
    assert "lo" in ns.split() and set(ns.split()[1:]) & (before - {"lo"})
    assert "Published ports are discarded" in p.stderr
    assert hosts == open("/etc/hosts").read()
    assert hostname.split() == [os.uname().nodename] * 2
    prefix = inst.veth_prefix()
    assert not [link for link in os.listdir("/sys/class/net") if link.startswith(prefix) or link == inst.bridge]


def busybox_image(inst, tmp_path, ref: str, **config) -> None:
    """A one-layer image of the host's busybox (sh, httpd, sleep) with the config asked."""
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    layer = [("dir", "bin"), ("file", "bin/busybox", busybox, 0o755),
             *[("symlink", f"bin/{a}", "busybox") for a in ("sh", "httpd", "sleep")],
             ("dir", "www"), ("file", "www/index.html", b"hi-from-exposed\n")]
    reg.oci_layout(str(tmp_path / "oci"), {"v1": reg.ImageSpec(layers=[layer], **config)})
    inst.cli("image.load", str(tmp_path / "oci"), "--ref", ref, check=True)


def exposing_image(inst, tmp_path) -> None:
    busybox_image(inst, tmp_path, "exposing:1", cmd=["/bin/httpd", "-f", "-p", "80", "-h", "/www"],
                  exposed_ports={"80/tcp": {}, "5353/udp": {}})


TRAPS = ("trap 'echo usr1 >> /out/got; exit 0' USR1; trap 'echo term >> /out/got; exit 0' TERM; "
         "echo ready > /out/ready; while true; do sleep 0.1; done")


def stopped_by(inst, out, *flags: str, before_rm=None) -> str:
    """Run TRAPS detached with flags, stop it, and say which signal(s) it saw (before_rm: a look
    at the stopped container before it goes)."""
    out.mkdir()
    inst.cli("run", "--name", "sig", "--detach", "--network", "none", "--volume", f"{out}:/out", *flags,
             "--", "/bin/sh", "-c", TRAPS, check=True)
    try:
        deadline = time.monotonic() + 10
        while not (out / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        inst.cli("stop", "sig", check=True)
        assert time.monotonic() - started < 3  # it left on the signal: no grace period, no SIGKILL
        if before_rm is not None:
            before_rm()
        return (out / "got").read_text() if (out / "got").exists() else ""
    finally:
        inst.cli("rm", "--force", "sig", check=True)


def test_image_stop_signal_and_init_forwards(inst, tmp_path):
    busybox_image(inst, tmp_path, "usr1:1", stop_signal="SIGUSR1")
    assert stopped_by(inst, tmp_path / "a", "--image", "usr1:1") == "usr1\n"  # the image's StopSignal
    assert stopped_by(inst, tmp_path / "b", "--image", "usr1:1", "--stop-signal", "TERM") == "term\n"
    assert stopped_by(inst, tmp_path / "c", "--init") == "term\n"  # tini waits for it and passes it on


def test_publish_all_and_port(inst, tmp_path):
    exposing_image(inst, tmp_path)
    low, high = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    inst.cli("run", "--name", "pa", "--detach", "--image", "exposing:1", "--publish-all", check=True)
    try:
        lines = inst.cli("port", "pa", check=True).stdout.splitlines()
        m = [re.fullmatch(r"(\d+)/(tcp|udp) -> 0\.0\.0\.0:(\d+)", ln) for ln in lines]
        assert all(m) and [(x[1], x[2]) for x in m] == [("80", "tcp"), ("5353", "udp")], lines
        port = int(m[0][3])
        assert low <= port <= high and low <= int(m[1][3]) <= high
        assert inst.cli("port", "pa", "--port", "80/tcp", check=True).stdout.strip() == f"0.0.0.0:{port}"
        missing = inst.cli("port", "pa", "--port", "81")
        assert missing.returncode == 125 and "81/tcp" in missing.stderr
        got = ""
        for _ in range(30):  # httpd may not listen yet
            got = subprocess.run([sys.executable, "-c", FETCH, f"http://127.0.0.1:{port}/"], capture_output=True,
                                 text=True).stdout
            if got:
                break
            time.sleep(0.1)
        assert got.strip() == "hi-from-exposed"
        inst.cli("stop", "pa", check=True)
        assert inst.cli("port", "pa", check=True).stdout == ""  # a stopped container holds no port
        inst.cli("start", "pa", check=True)
        assert inst.cli("port", "pa", "--port", "80", check=True).stdout.strip() == f"0.0.0.0:{port}"  # reused
    finally:
        inst.cli("rm", "--force", "pa", check=True)
    none = inst.cli("run", "--rm", "--network", "none", "--publish-all", "--", "/bin/true")
    assert none.returncode == 125
    inst.cli("run", "--rm", "--publish-all", "--", "/bin/true", check=True)  # busybox exposes nothing


def test_cidfile(inst, tmp_path):
    path = tmp_path / "cid"
    inst.cli("run", "--name", "cid", "--network", "none", "--cidfile", str(path), "--", "/bin/true", check=True)
    assert path.read_text() == record(inst, "cid")["id"] and re.fullmatch(r"[0-9a-f]{64}", path.read_text())
    msg = assert_refused(inst, ["run", "--name", "cid2", "--cidfile", str(path), "--", "/bin/true"],
                         ["cidfile", "container ID file found"], 125)
    assert "cid2" not in inst.containers() and len(msg) < 200
    inst.cli("rm", "cid", check=True)
    failed = inst.cli("run", "--name", "cid3", "--cidfile", str(tmp_path / "cid3"), "--", "/bin/true",
                      fault="cgroup.apply.mid:fail")
    assert failed.returncode == 125 and not (tmp_path / "cid3").exists()  # rolled back with the container
    unknown = inst.cli("port", "nosuch")
    assert unknown.returncode != 0 and len(unknown.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flags,words", [
    (["--env-file", "/nonexistent/env"], ["bad env-file", "cannot read"]),
    (["--add-host", "nocolon"], ["bad add-host", "HOST:IP"]),
    (["--add-host", "db:999.1.1.1"], ["bad add-host", "not an IP address"]),
    (["--dns", "resolver.example"], ["bad dns", "not an IP address"]),
    (["--stop-signal", "SIGFOO"], ["bad stop-signal"]),
    (["--stop-signal", "99"], ["bad stop-signal"]),
    (["--label", "=v"], ["bad label"]),
    (["--ulimit", "nofiles=1"], ["bad ulimit", "unknown name"]),
    (["--ulimit", "nofile=2048:1024"], ["bad ulimit", "soft limit is above"]),
    (["--ulimit", "nofile=1024:99999999"], ["bad ulimit"]),
    (["--shm-size", "0"], ["bad shm-size"]),
    (["--shm-size", "lots"], ["bad shm-size"]),
    (["--network", "bogus"], ["no such network: bogus"]),
    (["--cidfile", "/nonexistent/dir/cid"], ["bad cidfile", "directory"]),
])
def test_bad_values(inst, flags, words):
    assert_refused(inst, ["run", "--name", "x", *flags, "--", "/bin/true"], words, 125)


def test_bad_env_file_line(inst, tmp_path):
    f = tmp_path / "env"
    f.write_text("OK=1\n# fine\nNOT A KEY=1\n")
    assert_refused(inst, ["run", "--name", "x", "--env-file", str(f), "--", "/bin/true"],
                   ["bad env-file", str(f), "line 3"], 125)


def test_host_network_stages_have_nothing_to_do(inst):
    """The veth and nat stages report nothing (so the engine neither applies nor undoes them)."""
    from tests.test_contract import make_ctx, steps_for

    ctx = make_ctx("c-host", network="host")
    for step in steps_for(ctx, "veth", "nat"):
        check = step.check()
        assert check.state == "nothing" and check.applied and check.absent
    inst.cli("rm", "c-host", check=True)
