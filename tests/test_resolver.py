"""The instance's resolver: containers' names at 127.0.0.11 inside each bridged container,
everything else forwarded. The upstream is always a server the test runs on 127.0.0.0/8
(DIY_DOCKER_RESOLV_CONF names its resolv.conf): nothing goes to the host's resolvers."""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from steps import config, network, resolver

OUTSIDE_NAME, OUTSIDE_IP = "outside.test", "192.0.2.7"
QUERY = r"""
import socket, struct, sys
name, qtype, tcp = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "tcp"
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", qtype, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
s.settimeout(5)
s.connect(("127.0.0.11", 53))
if tcp:
    s.sendall(struct.pack(">H", len(q)) + q)
    data = b""
    while len(data) < 2 or len(data) < 2 + struct.unpack(">H", data[:2])[0]:
        data += s.recv(4096)
    data = data[2:]
else:
    s.send(q)
    data = s.recv(4096)
qid, flags, qd, an = struct.unpack(">HHHH", data[:8])
print(flags & 15, an, ".".join(str(b) for b in data[-4:]) if an else "-")
"""


def question(data: bytes):
    labels, pos = [], 12
    while data[pos]:
        labels.append(data[pos + 1:pos + 1 + data[pos]].decode())
        pos += 1 + data[pos]
    return ".".join(labels).lower(), struct.unpack(">H", data[pos + 1:pos + 3])[0], pos + 5


class Upstream:
    """A nameserver standing for the host's: OUTSIDE_NAME has an address, every other name is NXDOMAIN.
    UDP and TCP on port 53 of a loopback address of its own."""

    def __init__(self, inst):
        n = int(inst.id, 16)
        self.ip = f"127.{100 + n % 100}.{(n >> 8) % 256}.{2 + (n >> 16) % 250}"
        self.asked: list[tuple[str, str]] = []
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((self.ip, 53))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((self.ip, 53))
        self.tcp.listen(8)
        for s in (self.udp, self.tcp):
            s.settimeout(0.2)
        self.stopped = False
        self.conf = os.path.join(inst.root, "resolv.conf")
        with open(self.conf, "w") as f:
            f.write(f"nameserver {self.ip}\noptions timeout:2\n")
        inst.env["DIY_DOCKER_RESOLV_CONF"] = self.conf
        self.threads = [threading.Thread(target=t, daemon=True) for t in (self.serve_udp, self.serve_tcp)]
        for t in self.threads:
            t.start()

    def answer(self, data: bytes, proto: str) -> bytes:
        name, qtype, end = question(data)
        self.asked.append((name, proto))
        found = name == OUTSIDE_NAME
        flags = 0x8180 | (0 if found else 3)
        answer = (b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(OUTSIDE_IP)) \
            if found and qtype == 1 else b""
        return data[:2] + struct.pack(">HHHHH", flags, 1, 1 if answer else 0, 0, 0) + data[12:end] + answer

    def serve_udp(self):
        while not self.stopped:
            try:
                data, peer = self.udp.recvfrom(4096)
            except TimeoutError:
                continue
            self.udp.sendto(self.answer(data, "udp"), peer)

    def serve_tcp(self):
        while not self.stopped:
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = conn.recv(4096)[2:]
                out = self.answer(data, "tcp")
                conn.sendall(struct.pack(">H", len(out)) + out)

    def close(self):
        self.stopped = True
        for t in self.threads:
            t.join()
        for s in (self.udp, self.tcp):
            s.close()


@pytest.fixture
def upstream(inst):
    up = Upstream(inst)
    yield up
    up.close()


def resolver_pid(inst) -> int | None:
    try:
        with open(os.path.join(inst.run_root, "network", "resolver.pid")) as f:
            rec = json.load(f)
    except OSError:
        return None
    try:
        with open(f"/proc/{rec['pid']}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return rec["pid"] if int(fields[19]) == rec["start"] and fields[0] != "Z" else None


def gone(pid: int) -> bool:
    """Exited (a zombie until PID 1 reaps it, which may take a moment here)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def lookup(inst, container: str, name: str, server: str = "127.0.0.11"):
    return inst.cli("exec", container, "--", "nslookup", name, server)


def ask(inst, container: str, name: str, qtype: int = 1, proto: str = "udp") -> list[str]:
    """A query from the host's python inside the container's netns: (rcode, answers, address)."""
    netns = os.path.join(inst.run_root, "containers", container, "netns")
    p = subprocess.run(["nsenter", f"--net={netns}", sys.executable, "-c", QUERY, name, str(qtype), proto],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def test_peers_by_name_nxdomain_and_forwarding(inst, upstream):
    inst.cli("run", "--name", "c1", "--detach", "--", "/bin/sleep", "1000", check=True)
    try:
        hosts = os.path.join(inst.state_root, "containers", "c1", "etc", "hosts")
        before = os.stat(hosts)
        inst.cli("run", "--name", "c2", "--hostname", "h2", "--detach", "--", "/bin/sleep", "1000", check=True)
        c2 = json.loads(inst.cli("inspect", "c2", check=True).stdout)[0]["DiyDocker"]["last"]["ip"]

        # c1 finds c2, started after it, by name; ping resolves it the libc way (resolv.conf)
        p = lookup(inst, "c1", "c2")
        assert p.returncode == 0 and c2 in p.stdout, p.stdout + p.stderr
        p = inst.cli("exec", "c1", "--", "ping", "-c1", "-W3", "c2")
        assert p.returncode == 0 and c2 in p.stdout, p.stdout + p.stderr
        assert ask(inst, "c1", "C2") == ["0", "1", c2]  # names are case-insensitive
        assert ask(inst, "c1", "c2", proto="tcp") == ["0", "1", c2]
        assert ask(inst, "c1", "c2", qtype=28) == ["0", "0", "-"]  # AAAA: the name exists, no IPv6
        p = lookup(inst, "c1", c2)  # PTR
        assert p.returncode == 0 and "name = c2" in p.stdout, p.stdout + p.stderr
        assert not [a for a in upstream.asked if a[0] in ("c1", "c2") or "in-addr" in a[0]]  # never upstream

        # a name nobody has: NXDOMAIN (the upstream's answer, relayed)
        p = lookup(inst, "c1", "nosuchname")
        assert p.returncode != 0 and "NXDOMAIN" in p.stdout + p.stderr, p.stdout + p.stderr
        assert ask(inst, "c1", "nosuchname.test") == ["3", "0", "-"]

        # forwarded, over UDP and TCP, to the upstream, and its answer back
        p = lookup(inst, "c2", OUTSIDE_NAME)
        assert p.returncode == 0 and OUTSIDE_IP in p.stdout, p.stdout + p.stderr
        assert ask(inst, "c2", OUTSIDE_NAME, proto="tcp") == ["0", "1", OUTSIDE_IP]
        assert (OUTSIDE_NAME, "udp") in upstream.asked and (OUTSIDE_NAME, "tcp") in upstream.asked

        # c1's files were not touched by c2's start: nothing lists peers
        after = os.stat(hosts)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert "c2" not in open(hosts).read()
        resolv = open(os.path.join(inst.state_root, "containers", "c2", "etc", "resolv.conf")).read()
        assert "nameserver 127.0.0.11\n" in resolv and upstream.ip not in resolv
        own = open(os.path.join(inst.state_root, "containers", "c2", "etc", "hosts")).read()
        assert f"{c2}\th2 c2\n" in own
    finally:
        inst.cli("rm", "--force", "c2", check=True)
        pid = resolver_pid(inst)
        assert pid is not None  # c1 still runs: so does the resolver
        inst.cli("rm", "--force", "c1", check=True)
    assert resolver_pid(inst) is None and gone(pid)  # with the last container
    assert not os.path.exists(os.path.join(inst.run_root, "network"))


def test_resolver_killed_comes_back_with_the_next_run(inst, upstream, monkeypatch):
    for name in ("k1", "k2"):
        inst.cli("run", "--name", name, "--detach", "--", "/bin/sleep", "1000", check=True)
    try:
        k1, k2 = (json.loads(inst.cli("inspect", k, check=True).stdout)[0]["DiyDocker"]["last"]["ip"]
                  for k in ("k1", "k2"))
        pid = resolver_pid(inst)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert resolver_pid(inst) is None
        assert lookup(inst, "k1", "k2").returncode != 0  # nobody answers now
        p = inst.cli("step.veth", "--name", "k1", "--check")
        assert p.stdout.startswith("would change:") and "resolver" in p.stdout, p.stdout

        p = inst.cli("run", "--name", "k3", "--rm", "--", "nslookup", "k1", "127.0.0.11")
        assert p.returncode == 0, p.stdout + p.stderr
        assert resolver_pid(inst) not in (None, pid)
        p = lookup(inst, "k1", "k2")  # the running ones are served again too
        assert p.returncode == 0 and k2 in p.stdout, p.stdout + p.stderr
        assert ask(inst, "k1", "nosuchname.test", proto="tcp") == ["3", "0", "-"]

        # what network.repair calls does the same
        pid = resolver_pid(inst)
        os.kill(pid, signal.SIGKILL)
        while not gone(pid):
            time.sleep(0.02)
        monkeypatch.setenv("DIY_DOCKER_RESOLV_CONF", upstream.conf)
        assert resolver.repair(config.load()) == "resolver started again"
        assert resolver.repair(config.load()).startswith("resolver running")
        assert ask(inst, "k2", "k1") == ["0", "1", k1]
        p = inst.cli("step.veth", "--name", "k1", "--check")
        assert p.returncode == 0 and p.stdout.startswith("ok:"), p.stdout
    finally:
        for name in ("k1", "k2"):
            inst.cli("rm", "--force", name, check=True)
    assert resolver_pid(inst) is None


def test_network_none_and_dns_keep_their_files(inst, upstream, monkeypatch):
    """--dns: the given servers, directly (peers' names then do not resolve); --network none: the
    host's servers. Neither starts the resolver."""
    from steps.names import Names

    monkeypatch.setenv("DIY_DOCKER_RESOLV_CONF", upstream.conf)
    with open(upstream.conf, "w") as f:
        f.write("search example.test\nnameserver 192.0.2.53\noptions timeout:2\n")
    names = Names(config.load(), "x")
    files = network.etc_files(names, {"dns": ["192.0.2.99"]}, "10.9.9.9")
    assert "nameserver 192.0.2.99\n" in files["resolv.conf"] and "127.0.0.11" not in files["resolv.conf"]
    files = network.etc_files(names, {}, None)
    assert "nameserver 192.0.2.53\n" in files["resolv.conf"] and "search example.test\n" in files["resolv.conf"]
    files = network.etc_files(names, {"hostname": "hx", "add_hosts": [("db", "10.1.2.3")]}, "10.9.9.9")
    assert files["hosts"].splitlines()[3:] == ["10.9.9.9\thx x", "10.1.2.3\tdb"] and files["hostname"] == "hx\n"
    assert files["resolv.conf"].splitlines()[1:] == ["nameserver 127.0.0.11", "search example.test",
                                                     "options timeout:2", "options ndots:0"]
    p = inst.cli("run", "--name", "n", "--rm", "--network", "none", "--", "cat", "/etc/resolv.conf")
    assert p.returncode == 0 and "nameserver 192.0.2.53" in p.stdout, p.stdout + p.stderr
    assert resolver_pid(inst) is None


# --- what a hostile container can send (the server's own methods, no netns needed) -------------

def plain_query(qid: int, name: bytes = b"example.org", flags: int = 0x0100, qd: int = 1, an: int = 0) -> bytes:
    import struct

    labels = b"".join(bytes([len(part)]) + part for part in name.split(b".")) + b"\0"
    return struct.pack(">HHHHHH", qid, flags, qd, an, 0, 0) + labels + struct.pack(">HH", 1, 1)


@pytest.fixture
def server(tmp_path):
    from steps import dns_server

    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\n")  # nothing answers there: queries wait
    srv = dns_server.Server(str(tmp_path), str(tmp_path / "containers"), str(tmp_path / "resolv.conf"))
    yield srv
    for up in list(srv.upstreams.values()):
        if up.sock is not None:
            up.sock.close()
    srv.control.close()
    os.close(srv.host_ns)


def test_only_plain_queries_are_forwarded(server):
    sent = []
    junk = [plain_query(1, flags=0x8100),  # a response
            plain_query(2, flags=0x2800),  # an UPDATE
            plain_query(3, qd=0), plain_query(4, qd=2), plain_query(5, an=1),
            b"\xff" * 5, plain_query(6) + b"\0" * 5000]  # too big for a plain query
    for data in junk:
        server.answer(data, sent.append, False, "a")
    assert not server.upstreams and not sent  # dropped: never passed to the host's nameserver
    server.answer(plain_query(7), sent.append, False, "a")
    assert len(server.upstreams) == 1


def test_one_container_cannot_take_every_forwarding_slot(server):
    from steps import dns_server

    for i in range(dns_server.MAX_PENDING_EACH + 20):
        server.answer(plain_query(i), lambda out: None, False, "greedy")
    assert len(server.upstreams) == dns_server.MAX_PENDING_EACH
    server.answer(plain_query(9999), lambda out: None, False, "other")
    assert sum(1 for u in server.upstreams.values() if u.owner == "other") == 1


def test_a_client_that_does_not_read_loses_its_connection_not_the_resolver(server):
    import socket
    import time

    ours, theirs = socket.socketpair()  # theirs never reads
    ours.setblocking(False)
    server.watch(ours, server.on_client)
    server.clients[ours.fileno()] = [ours, b"", time.monotonic() + 10, "slow"]
    start = time.monotonic()
    for _ in range(2000):  # answers pile up in a buffer nobody empties
        server.send_tcp(ours, b"x" * 512)
        if ours.fileno() < 0:
            break
    assert time.monotonic() - start < 0.5  # never waits on the client
    assert ours.fileno() < 0 and not server.clients  # dropped
    theirs.close()
