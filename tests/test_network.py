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

from steps.network import mac_of
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
    """A netns standing for the internet, linked to the host (or to a netns standing for
    it: host_ns) by its own veth /30."""

    def __init__(self, inst, host_ns: str | None = None, tag: str = "o", octet: int = 150):
        n = int(inst.id, 16)
        self.ns = f"diyt-{inst.id}-{'out' if tag == 'o' else 'far'}"
        self.on_host = ["nsenter", f"--net=/run/netns/{host_ns}"] if host_ns else []
        self.host_if, self.peer_if = f"d{tag}{inst.id}a", f"d{tag}{inst.id}b"
        base = ipaddress.IPv4Address(f"10.{octet + n % 40}.{(n >> 8) % 256}.0") + 4 * ((n >> 16) % 60)
        self.host_ip, self.ip = str(base + 1), str(base + 2)
        sh("ip", "netns", "add", self.ns)
        sh(*self.on_host, "ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if,
           "netns", self.ns)
        sh(*self.on_host, "ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        sh(*self.on_host, "ip", "link", "set", self.host_if, "up")
        for cmd in (["ip", "addr", "add", f"{self.ip}/30", "dev", self.peer_if],
                    ["ip", "link", "set", self.peer_if, "up"], ["ip", "link", "set", "lo", "up"]):
            sh("ip", "netns", "exec", self.ns, *cmd)

    def run(self, *args, **kw):
        return sh("ip", "netns", "exec", self.ns, *args, **kw)

    def close(self):
        sh(*self.on_host, "ip", "link", "del", self.host_if, check=False)
        sh("ip", "netns", "del", self.ns, check=False)


@pytest.fixture
def outside(inst):
    o = Outside(inst)
    yield o
    o.close()


def ip_of(inst, name):
    return json.loads(inst.cli("inspect", name, check=True).stdout)[0]["DiyDocker"]["last"]["ip"]


def test_two_containers_by_address_and_name_and_from_the_host(inst):
    upstream = os.path.join(inst.root, "resolv.conf")  # no upstream: the host's resolvers are never asked
    open(upstream, "w").close()
    inst.env["DIY_DOCKER_RESOLV_CONF"] = upstream
    inst.cli("run", "--name", "c1", "--detach", "--", "/bin/sleep", "1000", check=True)
    try:
        c1 = ip_of(inst, "c1")
        p = inst.cli("run", "--name", "c2", "--rm", "--", "/bin/sh", "-c",
                     f"ping -c1 -W3 c1 >/dev/null && echo by-name; ping -c1 -W3 {c1} "
                     ">/dev/null && echo by-address; ip -4 -o addr show eth0 | awk '{print $4}'")
        assert p.returncode == 0, p.stderr
        assert "by-name" in p.stdout and "by-address" in p.stdout  # the name: from the instance's resolver
        assert ipaddress.IPv4Address(c1) in ipaddress.IPv4Network(inst.subnet)
        sh(BUSYBOX, "ping", "-c1", "-W3", c1)  # the host reaches the container
        hosts = open(os.path.join(inst.state_root, "containers", "c1", "etc", "hosts")).read()
        assert "c2" not in hosts  # peers are never written into a container's /etc/hosts
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


@pytest.mark.parametrize("spec", ["0:80", "70000:80", "99999", "a:b", "8080:80/sctp", "1.2.3:80:80", "8080:0",
                                  "80/sctp"])
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


# --- hardening: anti-spoofing, router advertisements ------------------------------------------------

LISTEN = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(0.2)
print("listening", flush=True)
got, end = [], time.monotonic() + 10
while time.monotonic() < end:
    try:
        data, peer = s.recvfrom(2048)
    except socket.timeout:
        continue
    got.append([peer[0], data.decode()])
    if data == b"done":
        end = min(end, time.monotonic() + 0.3)
print(json.dumps(got), flush=True)
"""

# IPv4 + UDP written by hand: a raw IPPROTO_RAW socket sends the header as given (the kernel fills
# in the length, the id and the header checksum), so the source address can be anything.
SPOOF = r"""
import socket, struct, sys, time
def packet(src, dst, port, payload):
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                       socket.inet_aton(src), socket.inet_aton(dst)) + udp
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
dst, port = sys.argv[1], int(sys.argv[2])
for arg in sys.argv[3:]:
    src, payload = arg.split("=", 1)
    for _ in range(3):
        s.sendto(packet(src, dst, port, payload.encode()), (dst, 0))
        time.sleep(0.03)
"""

# Whole Ethernet frames, each carrying "diy-TAG." after its headers (in an ARP frame: in the padding).
FRAMES = r"""
import socket, struct, sys, time
iface, mac, ip, unused = sys.argv[1:5]
hw = lambda m: bytes.fromhex(m.replace(":", ""))
def checksum(b):
    total = sum(struct.unpack(f"!{len(b) // 2}H", b))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
def ipv4(src, payload):  # UDP to the broadcast address, a valid header: br_netfilter checks it
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src),
                       socket.inet_aton("255.255.255.255"))
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + udp
def arp(sender_mac, sender_ip, payload):  # who has `unused`? (nobody answers)
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, hw(sender_mac), socket.inet_aton(sender_ip),
                       b"\0" * 6, socket.inet_aton(unused)) + payload
def ipv6(payload):  # fe80::bad to all nodes, no next header
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), 59, 255, socket.inet_pton(socket.AF_INET6, "fe80::bad"),
                       socket.inet_pton(socket.AF_INET6, "ff02::1")) + payload
BCAST, FORGED = "ff:ff:ff:ff:ff:ff", "02:42:de:ad:be:ef"
def frame(tag, src=mac, dst=BCAST):
    mark = f"diy-{tag}.".encode()
    body = {"mac-ipv4": (0x0800, ipv4(ip, mark)), "ip-ipv4": (0x0800, ipv4(unused, mark)),
            "arp-ip": (0x0806, arp(mac, unused, mark)), "arp-mac": (0x0806, arp(FORGED, ip, mark)),
            "ipv6": (0x86DD, ipv6(mark)), "vlan": (0x8100, struct.pack("!HH", 7, 0x0800) + ipv4(ip, mark)),
            "honest-arp": (0x0806, arp(mac, ip, mark)), "done": (0x0800, ipv4(ip, mark))}[tag]
    return hw(dst) + hw(src) + struct.pack("!H", body[0]) + body[1]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
for tag in sys.argv[5:]:
    f = frame(tag, src=FORGED) if tag == "mac-ipv4" else frame(tag, dst="33:33:00:00:00:01") if tag == "ipv6" \
        else frame(tag)
    for _ in range(3):
        s.send(f)
        time.sleep(0.03)
"""

CAPTURE = r"""
import json, re, socket, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
s.bind(("eth0", 0)); s.settimeout(0.2)
print("listening", flush=True)
got, end = set(), time.monotonic() + 10
while time.monotonic() < end:
    try:
        data = s.recv(4096)
    except socket.timeout:
        continue
    for tag in re.findall(rb"diy-([a-z0-9-]+)\.", data):
        got.add(tag.decode())
        if tag == b"done":
            end = min(end, time.monotonic() + 0.3)
print(json.dumps(sorted(got)), flush=True)
"""


def in_netns(inst, name: str) -> list[str]:
    """The command prefix that runs a host program inside a container's network namespace (its pin)."""
    return ["nsenter", f"--net={os.path.join(inst.run_root, 'containers', name, 'netns')}"]


def listened(listener: list[str], send: list[str]) -> str:
    """Start listener (it prints "listening" when bound), run send, then return what it heard."""
    proc = subprocess.Popen(listener, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "listening"
        sh(*send)
        out, _ = proc.communicate(timeout=20)
        return out
    finally:
        proc.kill()
        proc.wait()


def udp_heard(inst, where: list[str], dst: str, sends: list[str]) -> set[str]:
    """The payloads a listener at dst (a host command prefix: where) receives of the UDP packets
    c1 sends it from the given sources ("SRC=PAYLOAD", ...), followed by an honest "done"."""
    honest = ip_of(inst, "c1")
    out = listened([*where, sys.executable, "-c", LISTEN, dst, "19099"],
                   [*in_netns(inst, "c1"), sys.executable, "-c", SPOOF, dst, "19099", *sends, f"{honest}=done"])
    return {payload for _, payload in json.loads(out)}


def start(inst, *names: str) -> None:
    for name in names:
        inst.cli("run", "--name", name, "--detach", "--", "/bin/sleep", "1000", check=True)


def test_spoofed_sources_never_leave_a_container(inst, outside):
    """c1 sends UDP from another address of the subnet and from one outside it, then from its own,
    to an outside host (through NAT), to c2 and to the host's bridge address: only its own arrive."""
    start(inst, "c1", "c2")
    try:
        net = ipaddress.IPv4Network(inst.subnet)
        near, c1 = str(net.network_address + 200), ip_of(inst, "c1")
        for conf in ("all", "default", outside.peer_if):  # the outside host itself would drop a far source
            outside.run("sysctl", "-qw", f"net.ipv4.conf.{conf}.rp_filter=0")
        # far sources whose answers, if any, could only go to a test-made netns (the outside has no route out)
        cases = [(["ip", "netns", "exec", outside.ns], outside.ip, "192.0.2.7"),
                 (in_netns(inst, "c2"), ip_of(inst, "c2"), outside.ip),
                 ([], str(next(net.hosts())), outside.ip)]
        for where, dst, far in cases:
            heard = udp_heard(inst, where, dst, [f"{near}=spoof-near", f"{far}=spoof-far", f"{c1}=honest"])
            assert heard == {"honest", "done"}, (dst, heard)
        # without the instance's bridge table the same packets do arrive: the probe can see them
        sh("nft", "delete", "table", "bridge", inst.nft_table)
        for where, dst, _ in cases:
            heard = udp_heard(inst, where, dst, [f"{near}=spoof-near"])
            assert heard == {"spoof-near", "done"}, (dst, heard)
    finally:
        for name in ("c1", "c2"):
            inst.cli("rm", "--force", name, check=True)


def test_forged_frames_never_reach_a_peer(inst):
    """Frames from c1 with a forged MAC, a forged IPv4 or ARP sender, IPv6 (router advertisements
    included) or a VLAN tag never reach c2; c1's own IPv4 and ARP do."""
    start(inst, "c1", "c2")
    try:
        c1 = ip_of(inst, "c1")
        unused = str(ipaddress.IPv4Network(inst.subnet).network_address + 201)
        forged = ["mac-ipv4", "ip-ipv4", "arp-ip", "arp-mac", "ipv6", "vlan"]
        send = [*in_netns(inst, "c1"), sys.executable, "-c", FRAMES, "eth0", mac_of(c1), c1, unused]
        heard = json.loads(listened([*in_netns(inst, "c2"), sys.executable, "-c", CAPTURE],
                                    [*send, *forged, "honest-arp", "done"]))
        assert heard == ["done", "honest-arp"], heard
        sh("nft", "delete", "table", "bridge", inst.nft_table)  # and without the table they would
        heard = json.loads(listened([*in_netns(inst, "c2"), sys.executable, "-c", CAPTURE], [*send, *forged, "done"]))
        assert heard == sorted([*forged, "done"]), heard
    finally:
        for name in ("c1", "c2"):
            inst.cli("rm", "--force", name, check=True)


@pytest.mark.skipif(not os.path.isdir("/proc/sys/net/ipv6"), reason="the kernel has no IPv6")
def test_router_advertisements_are_refused_inside(inst):
    for network, devices in (("bridge", "all default eth0 lo"), ("none", "all default lo")):
        files = [f"/proc/sys/net/ipv6/conf/{d}/accept_ra" for d in devices.split()]
        p = inst.cli("run", "--name", "ra", "--rm", "--network", network, "--", "cat", *files)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == ["0"] * len(files), (network, p.stdout)


def test_ping_of_the_gateway_still_works(inst):
    """NET_RAW stays with containers: busybox ping opens a raw ICMP socket."""
    gateway = str(next(ipaddress.IPv4Network(inst.subnet).hosts()))
    p = inst.cli("run", "--name", "pg", "--rm", "--", "ping", "-c1", "-W3", gateway)
    assert p.returncode == 0, p.stdout + p.stderr


def test_check_sees_and_apply_repairs_the_hardening(inst):
    start(inst, "h")
    try:
        for stage in ("veth", "nat"):
            p = inst.cli(f"step.{stage}", "--name", "h", "--check")
            assert p.returncode == 0 and p.stdout.startswith("ok:"), p.stdout
        if os.path.isdir("/proc/sys/net/ipv6"):
            sh(*in_netns(inst, "h"), "sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=1")
        sh(*in_netns(inst, "h"), "ip", "link", "set", "eth0", "address", "02:00:00:00:00:01")
        sh("nft", "delete", "table", "bridge", inst.nft_table)
        for stage in ("veth", "nat"):
            p = inst.cli(f"step.{stage}", "--name", "h", "--check")
            assert p.stdout.startswith("would change:"), p.stdout
            inst.cli(f"step.{stage}", "--name", "h", check=True)
            p = inst.cli(f"step.{stage}", "--name", "h", "--check")
            assert p.returncode == 0 and p.stdout.startswith("ok:"), p.stdout
        view = json.loads(inst.cli("network.inspect", "--json", check=True).stdout)
        assert "diy:antispoof:h:" in view["antispoof_table"]
    finally:
        inst.cli("rm", "--force", "h", check=True)
    assert sh("nft", "list", "table", "bridge", inst.nft_table, check=False).returncode != 0


def test_foreign_bridge_table_of_our_name_is_refused(inst):
    sh("nft", "add", "table", "bridge", inst.nft_table)
    try:
        p = inst.cli("run", "--name", "t", "--", "/bin/true")
        assert p.returncode == 125 and f"nft table bridge {inst.nft_table}" in p.stderr, p.stderr
        assert "is not this instance's" in p.stderr
        assert sh("nft", "list", "table", "bridge", inst.nft_table).returncode == 0  # untouched
    finally:
        sh("nft", "delete", "table", "bridge", inst.nft_table)
    inst.cli("teardown", "t", check=True)


# --- the nat step's own rules, changed one container at a time --------------------------------------

def nft_rules(inst, family: str) -> list[dict]:
    listed = sh("nft", "-j", "list", "table", family, inst.nft_table, check=False)
    if listed.returncode != 0:
        return []
    return [i["rule"] for i in json.loads(listed.stdout)["nftables"] if "rule" in i]


def assert_tables_exact(inst, leases: dict[str, str]) -> None:
    """Our tables hold exactly the rules for these leases, each container's before the catch-alls."""
    from steps import config
    from steps.nat import wanted

    ip, bridge = nft_rules(inst, "ip"), nft_rules(inst, "bridge")
    if not leases:
        assert ip == bridge == []
        return
    comments = [r["comment"] for r in ip + bridge if not r["comment"].startswith("diy:owner:")]
    assert sorted(comments) == sorted(wanted(config.load(), leases))  # no duplicates, nothing stale
    forward = [r["comment"] for r in ip if r["chain"] == "forward"]
    assert all(forward.index(f"diy:member:{n}:{a}") < forward.index("diy:forward:out") for n, a in leases.items())
    assert forward[-2:] == ["diy:forward:out", "diy:forward:unpublished"]
    pre = [r["comment"] for r in bridge if r["chain"] == "prerouting"]
    assert pre[-1] == "diy:antispoof-unknown-port" and len(pre) == len(leases) + 2


def test_20_containers_in_and_out_in_random_order_keep_every_check_exact(inst):
    import random

    from steps import ipam
    from tests.test_contract import make_ctx, steps_for

    rng = random.Random(inst.id)
    ctxs = {f"r{i}": make_ctx(f"r{i}", publish=[f"{18100 + i}:80"] if i % 3 == 0 else []) for i in range(20)}
    stages = {name: steps_for(ctx, "veth", "nat", "teardown") for name, ctx in ctxs.items()}
    up: list[str] = []
    try:
        for name in rng.sample(sorted(ctxs), len(ctxs)):
            veth, nat, _ = stages[name]
            veth.apply()
            nat.apply()
            up.append(name)
            assert all(stages[n][1].check().applied for n in up)
            assert_tables_exact(inst, {n: ipam.load(ctxs[name].instance)[n] for n in up})
        # a container's rules damaged by hand: its check sees it, its apply mends them alone
        victim = rng.choice(up)
        leases = ipam.load(ctxs[victim].instance)
        handles = [(r["family"], r["chain"], r["handle"]) for r in nft_rules(inst, "ip") + nft_rules(inst, "bridge")
                   if r["comment"] in (f"diy:member:{victim}:{leases[victim]}",
                                       f"diy:antispoof:{victim}:{leases[victim]}:arp")]
        for family, chain, handle in handles:
            sh("nft", "delete", "rule", family, inst.nft_table, chain, "handle", str(handle))
        assert len(handles) == 2 and not stages[victim][1].check().applied
        stages[victim][1].apply()
        assert all(stages[n][1].check().applied for n in up)
        assert_tables_exact(inst, {n: leases[n] for n in up})
        for name in rng.sample(up, len(up)):
            veth, nat, _ = stages[name]
            nat.undo()
            assert nat.check().absent
            up.remove(name)
            assert all(stages[n][1].check().applied for n in up)
            assert_tables_exact(inst, {n: leases[n] for n in up})
            veth.undo()
    finally:
        for name in ctxs:
            veth, nat, teardown = stages[name]
            nat.undo()
            veth.undo()
            teardown.apply()
    for family in ("ip", "bridge"):
        assert sh("nft", "list", "table", family, inst.nft_table, check=False).returncode != 0
