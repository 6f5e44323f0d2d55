"""The instance's resolver process (what Docker's embedded DNS is): one per instance, for all its networks.

Run by steps/resolver.py as `python -I -S dns_server.py NET_DIR CONTAINERS_DIR RESOLV_CONF READY_FD`.
It lives in the host's network namespace and holds, for every container it serves, a UDP and
a TCP socket bound to 127.0.0.11:53 inside that container's netns (made there with setns and
taken back out: a socket stays in the netns it was made in). So a container reaches it on
its own loopback, and the host's INPUT chain never sees the traffic.

It answers A queries for the names (and aliases) of the containers holding a lease on a
network the asking container is on (NET_DIR/leases.json for the default network,
NET_DIR/../networks/NAME/leases.json for user networks; read again when they changed), an
empty NOERROR for their other types (AAAA: the bridge has no IPv6), PTR for their
addresses, and forwards everything else to the nameservers of RESOLV_CONF (read again when
it changed), from the host's netns: a loopback resolver such as systemd-resolved's works.

Commands, one line each on the unix socket NET_DIR/resolver.sock (root only):
`serve NAME` (open the sockets in RUN_ROOT/containers/NAME/netns), `drop NAME` (close them:
a socket holds its netns alive), `stop`. Each is answered `ok` or `error: ...`.

Standalone: the standard library only, and few modules of it - it lives as long as the
instance's containers, so what it imports is resident memory.
"""
import json
import os
import select
import signal
import socket
import struct
import sys
import time

ADDR = ("127.0.0.11", 53)
CLONE_NEWNET = 0x40000000
IP_FREEBIND = 15  # bind even before lo is up in the netns
TTL = 5  # containers come and go: a short time to live
UPSTREAM_TIMEOUT = 2.0  # per nameserver, then the next one
TCP_IDLE = 10.0
MAX_PENDING = 512  # forwarded queries in flight, all containers together
MAX_PENDING_EACH = 32  # ... and from one container: one cannot take every other's share
MAX_TCP = 256  # client connections, all containers together
MAX_TCP_EACH = 16  # ... and from one container
MAX_QUERY = 4096  # bytes: no plain query is bigger (EDNS's usual buffer)
HOUSEKEEPING = 30.0  # seconds between looks at the leases and at our socket file
PID_FILE = "resolver.pid"
SOCKET = "resolver.sock"
IN = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


def _setns_fn():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def setns(fd: int) -> None:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    return setns


def start_time() -> int:
    with open("/proc/self/stat") as f:
        text = f.read()
    return int(text[text.rindex(")") + 2:].split()[19])


def question(data: bytes):
    """(id, flags, name in lower case, qtype, qclass, end of the question) of a plain query, or None."""
    if len(data) < 17:
        return None
    qid, flags, qd = struct.unpack_from(">HHH", data)
    an, ns = struct.unpack_from(">HH", data, 6)
    if flags & 0xF800 or qd != 1 or an or ns or len(data) > MAX_QUERY:  # a response, an update, not a query
        return None
    labels, pos = [], 12
    while True:
        if pos >= len(data):
            return None
        length = data[pos]
        if length & 0xC0 or pos + 1 + length + 4 > len(data):
            return None
        pos += 1
        if length == 0:
            break
        labels.append(data[pos:pos + length])
        pos += length
    qtype, qclass = struct.unpack_from(">HH", data, pos)
    return qid, flags, b".".join(labels).lower(), qtype, qclass, pos + 4


def reply(data: bytes, q, rcode: int, answer: bytes = b"") -> bytes:
    qid, flags, _, _, _, end = q
    rflags = 0x8000 | 0x0080 | (flags & 0x0100) | rcode | (0x0400 if rcode in (0, 3) else 0)
    return struct.pack(">HHHHHH", qid, rflags, 1, 1 if answer else 0, 0, 0) + data[12:end] + answer


def servfail(data: bytes) -> bytes | None:
    q = question(data)
    return reply(data, q, 2) if q else None


class Upstream:
    """One forwarded query: to each nameserver in turn, over UDP (or TCP for a TCP client)."""

    def __init__(self, query: bytes, answer, tcp: bool):
        self.query, self.answer, self.tcp = query, answer, tcp
        self.index, self.sock, self.deadline, self.buf, self.sent = -1, None, 0.0, b"", False
        self.owner = ""


class Server:
    def __init__(self, net_dir: str, containers_dir: str, resolv_conf: str):
        self.net_dir, self.containers_dir, self.resolv_conf = net_dir, containers_dir, resolv_conf
        self.setns = _setns_fn()
        self.host_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.poll = select.poll()
        self.handlers = {}  # fd -> (socket, handler(socket, events))
        self.served = {}  # container name -> (netns inode, udp socket, tcp socket)
        self.names = {}  # network ("" the default) -> lower-case name or alias (bytes) -> packed IPv4 address
        self.member = {}  # container -> the networks it holds a lease on
        self.reverse = {}  # network -> d.c.b.a.in-addr.arpa (bytes) -> the name, as a DNS name (labels)
        self.leases_stamp = None
        self.servers, self.resolv_stamp = [], None
        self.upstreams = {}  # fd -> Upstream
        self.clients = {}  # fd -> [socket, buffer, deadline, container name]
        self.owner = {}  # a UDP socket's fd -> the container it listens for
        self.running = True
        os.chdir(net_dir)  # a relative bind: a long RUN_ROOT would not fit sockaddr_un
        try:
            os.unlink(SOCKET)
        except FileNotFoundError:
            pass
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control.bind(SOCKET)
        os.chmod(SOCKET, 0o600)
        self.control.listen(64)
        self.socket_inode = os.stat(SOCKET).st_ino
        self.watch(self.control, self.on_control)

    # --- sockets in the containers' netns ---

    def watch(self, sock, handler, events: int = IN) -> None:
        sock.setblocking(False)
        self.handlers[sock.fileno()] = (sock, handler)
        self.poll.register(sock.fileno(), events)

    def unwatch(self, sock) -> None:
        if self.handlers.pop(sock.fileno(), None) is not None:
            self.poll.unregister(sock.fileno())
        sock.close()

    def serve(self, name: str) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad container name {name!r}")
        path = os.path.join(self.containers_dir, name, "netns")
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            inode = os.fstat(fd).st_ino
            if name in self.served:
                if self.served[name][0] == inode:
                    return
                self.drop(name)  # a netns of an earlier run of that name
            self.setns(fd)  # EINVAL when nothing is pinned there
            try:
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                for s in (udp, tcp):
                    s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                udp.bind(ADDR)
                tcp.bind(ADDR)
                tcp.listen(16)
            finally:
                try:
                    self.setns(self.host_ns)
                except OSError:
                    os._exit(3)  # never go on in a container's netns
        finally:
            os.close(fd)
        self.served[name] = (inode, udp, tcp)
        self.owner[udp.fileno()] = name
        self.watch(udp, self.on_udp)
        self.watch(tcp, lambda s, events, name=name: self.on_accept(s, name))

    def drop(self, name: str) -> None:
        entry = self.served.pop(name, None)
        if entry is not None:
            self.owner.pop(entry[1].fileno(), None)
            self.unwatch(entry[1])
            self.unwatch(entry[2])
        for fd, client in list(self.clients.items()):  # its connections hold the netns too
            if client[3] == name:
                self.clients.pop(fd, None)
                self.unwatch(client[0])

    # --- names and nameservers ---

    def lookup(self, name: bytes, owner: str = ""):
        """NAME's address on a network the asking container is on (names resolve within a network)."""
        self.refresh()
        for net in self.member.get(owner, ()):
            address = self.names.get(net, {}).get(name)
            if address is not None:
                return address
        return None

    def pointer(self, name: bytes, owner: str = ""):
        """The PTR of an address on a network the asking container is on (never another's)."""
        for net in self.member.get(owner, ()):
            target = self.reverse.get(net, {}).get(name)
            if target is not None:
                return target
        return None

    def lease_files(self) -> list:
        """The default network's leases, then each user network's (NET_DIR/../networks/NAME/)."""
        files = [("", os.path.join(self.net_dir, "leases.json"))]
        user = os.path.join(os.path.dirname(self.net_dir), "networks")
        try:
            files += [(n, os.path.join(user, n, "leases.json")) for n in sorted(os.listdir(user))]
        except OSError:
            pass
        return files

    def refresh(self) -> None:
        stamp, found = [], []
        for net, path in self.lease_files():
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamp.append((path, st.st_ino, st.st_mtime_ns, st.st_size))
            found.append((net, path))
        if stamp == self.leases_stamp:
            return
        try:
            read = {net: self.read_leases(path) for net, path in found}
        except (OSError, ValueError, AttributeError):
            return  # not readable now: keep what we have, and try again
        names, member, reverse = {}, {}, {}
        for net, (leases, aliases) in read.items():
            own, back = names.setdefault(net, {}), reverse.setdefault(net, {})
            for n, ip in sorted(leases.items()):  # containers' own names first: an alias never takes one
                member.setdefault(n, []).append(net)
                own[n.lower().encode()] = socket.inet_aton(ip)
                back[".".join(reversed(ip.split("."))).encode() + b".in-addr.arpa"] = \
                    b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"
            for n, ip in sorted(leases.items()):
                for alias in aliases.get(n, []):
                    own.setdefault(alias.lower().encode(), socket.inet_aton(ip))
        self.leases_stamp, self.names, self.member, self.reverse = stamp, names, member, reverse
        for name in [n for n in self.served if n not in member]:  # its undo was killed before the drop
            self.drop(name)

    @staticmethod
    def read_leases(path: str) -> tuple:
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}, {}
        return data.get("leases", {}), data.get("aliases", {})

    def nameservers(self) -> list:
        try:
            st = os.stat(self.resolv_conf)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self.resolv_stamp:
            self.resolv_stamp, self.servers = stamp, []
            try:
                with open(self.resolv_conf, errors="replace") as f:
                    lines = f.read(1 << 16).splitlines()
            except (OSError, ValueError):
                lines = []
            for line in lines:
                fields = line.split()
                if fields[:1] == ["nameserver"] and len(fields) > 1 and fields[1] != ADDR[0]:
                    self.servers.append(fields[1])
            self.servers = self.servers[:3]  # as the libc resolver (MAXNS)
        return self.servers

    # --- queries ---

    def answer(self, data: bytes, send, tcp: bool, owner: str = "") -> None:
        """A plain query is answered or forwarded; anything else is dropped, never passed on
        (the host's nameserver sees only standard queries, never an update or a response)."""
        q = question(data)
        if q is None:
            return
        address = self.lookup(q[2], owner)
        target = self.pointer(q[2], owner) if address is None and q[3] == 12 else None
        if target is not None:  # PTR of a container's address
            send(reply(data, q, 0, b"\xc0\x0c" + struct.pack(">HHIH", 12, 1, TTL, len(target)) + target))
            return
        if address is None:
            self.forward(data, send, tcp, owner)
            return
        _, _, _, qtype, qclass, _ = q
        record = b""
        if qtype in (1, 255) and qclass in (1, 255):  # A, ANY
            record = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, TTL, 4) + address
        send(reply(data, q, 0, record))  # AAAA and the rest: the name exists, with no such record

    def forward(self, data: bytes, send, tcp: bool, owner: str = "") -> None:
        mine = sum(1 for u in self.upstreams.values() if u.owner == owner)
        if len(self.upstreams) >= MAX_PENDING or mine >= MAX_PENDING_EACH:
            return  # the client asks again
        up = Upstream(data, send, tcp)
        up.owner = owner
        self.next_server(up)

    def next_server(self, up: Upstream) -> None:
        if up.sock is not None:
            self.upstreams.pop(up.sock.fileno(), None)
            self.unwatch(up.sock)
            up.sock = None
        servers = self.nameservers()
        up.index += 1
        while up.index < len(servers):
            server = servers[up.index].split("%")[0]
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            try:
                s = socket.socket(family, socket.SOCK_STREAM if up.tcp else socket.SOCK_DGRAM)
            except OSError:
                break
            s.setblocking(False)
            try:
                if up.tcp:
                    s.connect_ex((server, 53))
                else:
                    s.connect((server, 53))
                    s.send(up.query)
            except OSError:
                s.close()
                up.index += 1
                continue
            up.sock, up.deadline, up.buf, up.sent = s, time.monotonic() + UPSTREAM_TIMEOUT, b"", False
            self.upstreams[s.fileno()] = up
            self.watch(s, self.on_upstream, IN | select.POLLOUT if up.tcp else IN)
            return
        failed = servfail(up.query)
        if failed:
            self.send_safely(up.answer, failed)

    def send_safely(self, send, data: bytes) -> None:
        try:
            send(data)
        except OSError:
            pass

    def on_upstream(self, s, events: int) -> None:
        up = self.upstreams.get(s.fileno())
        if up is None:
            self.unwatch(s)
            return
        try:
            if up.tcp:
                if not up.sent:
                    if not events & select.POLLOUT:
                        raise OSError("connection failed")
                    out = struct.pack(">H", len(up.query)) + up.query
                    if s.send(out) != len(out):  # a few bytes into a new connection's buffer: all or nothing
                        raise OSError("short send")
                    up.sent = True
                    self.poll.modify(s.fileno(), IN)
                    return
                chunk = s.recv(65537)
                if not chunk:
                    raise OSError("closed")
                up.buf += chunk
                if len(up.buf) < 2 or len(up.buf) < 2 + struct.unpack_from(">H", up.buf)[0]:
                    return
                size = struct.unpack_from(">H", up.buf)[0]
                data, up.buf = up.buf[2:2 + size], up.buf[2 + size:]
            else:
                data = s.recv(65535)
            if data[:2] != up.query[:2]:
                return  # not the answer to this query
        except OSError:
            self.next_server(up)
            return
        self.upstreams.pop(s.fileno(), None)
        self.unwatch(s)
        self.send_safely(up.answer, data)

    def on_udp(self, s, events: int) -> None:
        for _ in range(64):
            try:
                data, peer = s.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self.answer(data, lambda out, s=s, peer=peer: s.sendto(out, peer), False, self.owner.get(s.fileno(), ""))

    def on_accept(self, s, name: str) -> None:
        try:
            conn, _ = s.accept()
        except OSError:
            return
        if len(self.clients) >= MAX_TCP or sum(1 for c in self.clients.values() if c[3] == name) >= MAX_TCP_EACH:
            conn.close()
            return
        self.watch(conn, self.on_client)
        self.clients[conn.fileno()] = [conn, b"", time.monotonic() + TCP_IDLE, name]  # the whole message's deadline

    def on_client(self, conn, events: int) -> None:
        client = self.clients.get(conn.fileno())
        try:
            chunk = conn.recv(65537)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk or client is None or len(client[1]) > 70000:
            self.clients.pop(conn.fileno(), None)
            self.unwatch(conn)
            return
        if not client[1]:
            client[2] = time.monotonic() + TCP_IDLE  # a new message: a new deadline (a trickle does not extend one)
        client[1] += chunk
        while len(client[1]) >= 2 and len(client[1]) >= 2 + struct.unpack_from(">H", client[1])[0]:
            size = struct.unpack_from(">H", client[1])[0]
            data, client[1] = client[1][2:2 + size], client[1][2 + size:]
            self.answer(data, lambda out, c=conn: self.send_tcp(c, out), True, client[3])
            if not client[1]:
                client[2] = time.monotonic() + TCP_IDLE

    def send_tcp(self, conn, out: bytes) -> None:
        """Never blocks the loop: a client that does not read its answers (its socket's buffer
        full) loses its connection, not every other container its resolver."""
        if conn.fileno() < 0 or conn.fileno() not in self.clients:
            return
        message = struct.pack(">H", len(out)) + out
        try:
            sent = conn.send(message)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent != len(message):
            self.clients.pop(conn.fileno(), None)
            self.unwatch(conn)

    # --- control ---

    def on_control(self, s, events: int) -> None:
        try:
            conn, _ = s.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(2.0)
            try:
                line = b""
                while not line.endswith(b"\n") and len(line) < 512:
                    chunk = conn.recv(512)
                    if not chunk:
                        break
                    line += chunk
                word, _, arg = line.decode(errors="replace").strip().partition(" ")
                try:
                    if word == "serve":
                        self.serve(arg)
                    elif word == "drop":
                        self.drop(arg)
                    elif word == "stop":
                        self.running = False
                    elif word != "ping":
                        raise ValueError(f"unknown command {word!r}")
                    conn.sendall(b"ok\n")
                except (OSError, ValueError) as e:
                    conn.sendall(f"error: {e}\n".encode())
            except OSError:
                pass

    def serve_leased(self) -> None:
        """Every container holding a lease (a start after a kill): those whose netns is pinned."""
        self.leases_stamp = None
        self.refresh()
        for name in self.member:
            try:
                self.serve(name)
            except (OSError, ValueError):
                pass

    def sweep(self) -> float:
        """Time out upstreams and idle clients; returns the poll timeout in ms (-1: none)."""
        now, soonest = time.monotonic(), None
        for up in list(self.upstreams.values()):
            if up.deadline <= now:
                self.next_server(up)
            elif up.sock is not None:
                soonest = up.deadline if soonest is None else min(soonest, up.deadline)
        for fd, (conn, _, deadline, _) in list(self.clients.items()):
            if deadline <= now:
                self.clients.pop(fd, None)
                self.unwatch(conn)
            else:
                soonest = deadline if soonest is None else min(soonest, deadline)
        return -1 if soonest is None else max(0.0, (soonest - time.monotonic()) * 1000) + 1

    def housekeeping(self) -> None:
        """Containers whose lease is gone are dropped; when our socket file is gone or not ours
        (the instance's run root removed by hand, a successor started), we go."""
        self.refresh()
        try:
            mine = os.stat(os.path.join(self.net_dir, SOCKET)).st_ino == self.socket_inode
        except OSError:
            mine = False
        self.running = self.running and mine

    def run(self) -> None:
        timeout, due = HOUSEKEEPING * 1000, time.monotonic() + HOUSEKEEPING
        while self.running:
            for fd, events in self.poll.poll(timeout):
                entry = self.handlers.get(fd)
                if entry is not None:
                    try:
                        entry[1](entry[0], events)
                    except Exception:  # one bad packet or client never stops the others' resolver
                        pass
            timeout = self.sweep()
            if time.monotonic() >= due:
                self.housekeeping()
                due = time.monotonic() + HOUSEKEEPING
            left = (due - time.monotonic()) * 1000 + 1
            timeout = left if timeout < 0 else min(timeout, left)


def stopped(*_):
    raise SystemExit(0)


def main(argv: list) -> None:
    net_dir, containers_dir, resolv_conf, ready = argv[1], argv[2], argv[3], int(argv[4])
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # two sockets per container
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, stopped)
    signal.signal(signal.SIGINT, stopped)
    server = None
    mine = {"pid": os.getpid(), "start": start_time()}
    try:
        try:
            server = Server(net_dir, containers_dir, resolv_conf)
            server.serve_leased()
            tmp = os.path.join(net_dir, f"{PID_FILE}.tmp")
            with open(tmp, "w") as f:
                f.write(json.dumps(mine))
            os.rename(tmp, os.path.join(net_dir, PID_FILE))
            os.write(ready, f"ok {os.getpid()}\n".encode())
        except Exception as e:
            os.write(ready, f"error: {e}\n".encode())
            raise SystemExit(1) from None
        finally:
            os.close(ready)
        server.run()
    finally:
        if server is not None:
            try:
                with open(os.path.join(net_dir, PID_FILE)) as f:
                    if json.load(f) == mine:  # not a successor's
                        os.unlink(os.path.join(net_dir, PID_FILE))
            except (OSError, ValueError):
                pass
            try:
                os.unlink(os.path.join(net_dir, SOCKET))
            except OSError:
                pass


if __name__ == "__main__":
    main(sys.argv)
