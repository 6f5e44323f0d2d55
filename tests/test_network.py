"""Networking against real links, namespaces and nftables. Traffic goes only to
containers, to the host's own addresses and to an "outside" netns the test makes."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

BUSYBOX = "/bin/busybox"
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000)); s.listen(1); print("listening", flush=True)
c, peer = s.accept(); c.sendall(b"hello-from-outside\n"); print(peer[0], flush=True); c.close()
"""


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, check=check, **kw)


class Outside:
    """A netns standing for the internet, linked to the host by its own veth /30."""

    def __init__(self, inst):
        n = int(inst.id, 16)
        self.ns = f"diyt-{inst.id}-out"
        self.host_if, self.peer_if = f"do{inst.id}a", f"do{inst.id}b"
        base = ipaddress.IPv4Address(f"10.{150 + n % 40}.{(n >> 8) % 256}.0") + 4 * ((n >> 16) % 60)
        self.host_ip, self.ip = str(base + 1), str(base + 2)
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        for cmd in (["ip", "addr", "add", f"{self.ip}/30", "dev", self.peer_if],
                    ["ip", "link", "set", self.peer_if, "up"], ["ip", "link", "set", "lo", "up"]):
            sh("ip", "netns", "exec", self.ns, *cmd)

    def run(self, *args, **kw):
        return sh("ip", "netns", "exec", self.ns, *args, **kw)

    def close(self):
        sh("ip", "link", "del", self.host_if, check=False)
        sh("ip", "netns", "del", self.ns, check=False)


@pytest.fixture
def outside(inst):
    o = Outside(inst)
    yield o
    o.close()


def ip_of(inst, name):
    return json.loads(inst.cli("inspect", name, check=True).stdout)["last"]["ip"]


def test_two_containers_by_address_and_name_and_from_the_host(inst):
    inst.cli("run", "--name", "c1", "--detach", "--", "/bin/sleep", "1000", check=True)
    try:
        p = inst.cli("run", "--name", "c2", "--rm", "--", "/bin/sh", "-c",
                     "ping -c1 -W3 c1 >/dev/null && echo by-name; ping -c1 -W3 $(grep -w c1 /etc/hosts | cut -f1) "
                     ">/dev/null && echo by-address; ip -4 -o addr show eth0 | awk '{print $4}'")
        assert p.returncode == 0, p.stderr
        assert "by-name" in p.stdout and "by-address" in p.stdout
        c1 = ip_of(inst, "c1")
        assert ipaddress.IPv4Address(c1) in ipaddress.IPv4Network(inst.subnet)
        sh(BUSYBOX, "ping", "-c1", "-W3", c1)  # the host reaches the container
        hosts = open(os.path.join(inst.state_root, "containers", "c1", "etc", "hosts")).read()
        assert "c2" not in hosts  # c2 is gone again: c1's /etc/hosts was rewritten
    finally:
        inst.cli("rm", "--force", "c1", check=True)


def test_network_none_has_lo_only(inst):
    p = inst.cli("run", "--name", "iso", "--rm", "--network", "none", "--", "ip", "-o", "link")
    assert p.returncode == 0, p.stderr
    assert [line.split(":")[1].strip() for line in p.stdout.splitlines()] == ["lo"]


def test_masquerade_to_the_outside(inst, outside):
    server = subprocess.Popen(["ip", "netns", "exec", outside.ns, sys.executable, "-c", SERVER],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "listening"
        p = inst.cli("run", "--name", "out", "--rm", "--", "/bin/sh", "-c", f"nc {outside.ip} 9000 </dev/null")
        assert p.returncode == 0, p.stderr
        assert "hello-from-outside" in p.stdout
        assert server.stdout.readline().strip() == outside.host_ip  # the host's address: masqueraded
    finally:
        server.kill()
        server.wait()


def test_published_port_from_outside_and_loopback(inst, outside):
    inst.cli("run", "--name", "web", "--detach", "--publish", "18080:80", "--", "/bin/sh", "-c",
             "mkdir -p /www && echo hi-from-web > /www/index.html && exec httpd -f -p 80 -h /www", check=True)
    try:
        time.sleep(0.3)
        got = outside.run(sys.executable, "-c", FETCH, f"http://{outside.host_ip}:18080/")
        assert got.stdout.strip() == "hi-from-web"
        got = sh(sys.executable, "-c", FETCH, "http://127.0.0.1:18080/")
        assert got.stdout.strip() == "hi-from-web"
        p = inst.cli("run", "--name", "clash", "--publish", "18080:81", "--", "/bin/true")
        assert p.returncode == 125 and "already published by container web" in p.stderr
        table = sh("nft", "list", "table", "ip", inst.nft_table).stdout
        assert "dport 18080" in table
        # route_localnet lets 127.0.0.1 reach the bridge; containers must not reach the host's loopback
        assert f'iifname "{inst.bridge}" ip daddr 127.0.0.0/8 drop' in table
    finally:
        inst.cli("stop", "web", check=True)
    assert sh(sys.executable, "-c", FETCH, "http://127.0.0.1:18080/", check=False).returncode != 0
    assert sh("nft", "list", "table", "ip", inst.nft_table, check=False).returncode != 0  # last one: gone
    inst.cli("rm", "web", check=True)


def test_a_rerender_keeps_the_other_containers_ports(inst):
    inst.cli("run", "--name", "p1", "--detach", "--publish", "18081:80", "--", "/bin/sleep", "1000", check=True)
    inst.cli("run", "--name", "p2", "--detach", "--publish", "18082:80/udp", "--", "/bin/sleep", "1000",
             check=True)
    table = sh("nft", "list", "table", "ip", inst.nft_table).stdout
    assert "tcp dport 18081" in table and "udp dport 18082" in table
    inst.cli("rm", "--force", "p2", check=True)
    table = sh("nft", "list", "table", "ip", inst.nft_table).stdout
    assert "tcp dport 18081" in table and "18082" not in table
    view = json.loads(inst.cli("network.inspect", "--json", check=True).stdout)
    assert list(view["leases"]) == ["p1"] and view["published"][0]["host_port"] == 18081
    inst.cli("rm", "--force", "p1", check=True)


def test_restart_keeps_the_address(inst):
    inst.cli("run", "--name", "same", "--detach", "--", "/bin/sleep", "1000", check=True)
    inst.cli("run", "--name", "other", "--detach", "--", "/bin/sleep", "1000", check=True)
    first, second = ip_of(inst, "same"), ip_of(inst, "other")
    inst.cli("stop", "same", check=True)
    inst.cli("start", "same", check=True)
    assert ip_of(inst, "same") == first != second
    for name in ("same", "other"):
        inst.cli("rm", "--force", name, check=True)


def test_32_containers_at_once(inst):
    inst.cli("run", "--rm", "--name", "warm", "--", "/bin/true", check=True)
    procs = [inst.popen("run", "--name", f"m{i}", "--detach", "--", "/bin/sleep", "1000") for i in range(32)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    leases = json.loads(inst.cli("network.inspect", "--json", check=True).stdout)["leases"]
    assert len(leases) == 32 and len(set(leases.values())) == 32
    pings = [subprocess.Popen([BUSYBOX, "ping", "-c1", "-W5", ip], stdout=subprocess.DEVNULL) for ip in leases.values()]
    assert all(p.wait() == 0 for p in pings)
    procs = [inst.popen("rm", "--force", f"m{i}") for i in range(32)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert inst.containers() == []


@pytest.mark.parametrize("spec", ["0:80", "70000:80", "80", "a:b", "8080:80/sctp", "1.2.3:80:80", "8080:0"])
def test_bad_publish_specs(inst, spec):
    p = inst.cli("run", "--name", "x", "--publish", spec, "--", "/bin/true")
    assert p.returncode == 125 and "bad publish" in p.stderr and "Traceback" not in p.stderr
    assert inst.containers() == []


def test_overlapping_subnet_and_foreign_bridge_are_refused(inst, outside):
    clash = str(ipaddress.IPv4Network(f"{outside.host_ip}/24", strict=False))
    p = inst.cli("run", "--name", "x", "--", "/bin/true", env={"DIY_DOCKER_SUBNET": clash})
    assert p.returncode == 125 and "overlaps" in p.stderr, p.stderr
    sh("ip", "link", "add", inst.bridge, "type", "bridge")  # same name, not ours
    try:
        p = inst.cli("run", "--name", "x", "--", "/bin/true")
        assert p.returncode == 125 and "not this instance's" in p.stderr, p.stderr
    finally:
        sh("ip", "link", "del", inst.bridge)
    assert inst.containers() == [] and not os.path.exists(os.path.join(inst.run_root, "network"))


def test_veth_step_alone(inst):
    inst.cli("run", "--name", "vs", "--detach", "--", "/bin/sleep", "1000", check=True)
    p = inst.cli("step.veth", "--name", "vs", "--check")
    assert p.returncode == 0 and p.stdout.startswith("ok:"), p.stdout
    inst.cli("rm", "--force", "vs", check=True)
    assert REPO


def test_foreign_table_of_our_name_is_refused(inst):
    sh("nft", "add", "table", "ip", inst.nft_table)
    try:
        p = inst.cli("run", "--name", "t", "--", "/bin/true")
        assert p.returncode == 125 and "is not this instance's" in p.stderr, p.stderr
        assert sh("nft", "list", "table", "ip", inst.nft_table).returncode == 0  # untouched
    finally:
        sh("nft", "delete", "table", "ip", inst.nft_table)
    inst.cli("teardown", "t", check=True)


def test_start_refuses_a_port_taken_meanwhile(inst):
    inst.cli("run", "--name", "a", "--publish", "18095:80", "--", "/bin/true", check=True)
    inst.cli("run", "--name", "b", "--detach", "--publish", "18095:80", "--", "/bin/sleep", "1000", check=True)
    p = inst.cli("start", "a")
    assert p.returncode == 125 and "already published by container b" in p.stderr
    for name in ("a", "b"):
        inst.cli("rm", "--force", name, check=True)
