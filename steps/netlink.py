"""A small rtnetlink client: one NETLINK_ROUTE socket, no event loop.

pyroute2 0.9's IPRoute runs an asyncio loop for every call (a bridged `run --rm` made
~110 of them); here a request is a sendmsg and its answer a few recv()s. pyroute2
stays for what it does well - the message classes (ifinfmsg, ifaddrmsg, rtmsg) encode
and decode the messages - and is imported lean: its package __init__ imports every
module it has (NDB, IPDB, conntrack, ...), so the package module is replaced by an
empty one with the same path before the message modules are imported; neither asyncio
nor pyroute2's sockets are loaded.

The surface is the part of IPRoute the stages use: `iproute(netns)` gives a context
manager with link/addr/route (add, set, del, get), link_lookup, get_addr and get_routes,
answering with pyroute2's message objects (`.get_attr(name)`, `["index"]`); an error
the kernel answers is a NetlinkError, an OSError with its errno. `batch(*ops)` sends
several requests in one sendmsg and reads their acks: one round trip.
"""
from __future__ import annotations

import errno
import importlib.util
import os
import socket
import struct
import sys
import types

from steps import linux

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE, NLMSG_MIN_TYPE = 2, 3, 0x10
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x200, 0x400, 0x300
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
IFF_UP = 0x1
RTEXT_FILTER_SKIP_STATS = 0x8
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1
HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: length, type, flags, seq, pid
RECV_SIZE = 1 << 16  # a dump's datagrams stay below 32 KiB (netlink_dump); a get's are one message
BATCH = 64  # requests per sendmsg: the kernel queues all their acks before we read one (~1 KiB each
# of the receive buffer's ~200 KiB; a full queue drops them)
DUMP_TRIES = 5
TIMEOUT = 30  # seconds without an answer the kernel owes: an error, never a hang

EXISTS, GONE = (errno.EEXIST,), (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL)


class NetlinkError(OSError):
    """The kernel refused a request: errno, and what was asked."""

    @property
    def code(self) -> int:
        return self.errno


_classes: tuple = ()  # (ifinfmsg, ifaddrmsg, rtmsg) once imported
_link_nlas: frozenset = frozenset()  # the IFLA_ names ifinfmsg knows


def _lean_import():
    """(ifinfmsg, ifaddrmsg, rtmsg) from pyroute2, without its package __init__."""
    global _classes, _link_nlas
    if _classes:
        return _classes
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is None:
            raise ImportError("pyroute2 is not installed: pip install pyroute2")
        package = types.ModuleType("pyroute2")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__, package.__file__ = spec, spec.origin
        sys.modules["pyroute2"] = package
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    _link_nlas = frozenset(name for name, _ in ifinfmsg.nla_map)
    _classes = (ifinfmsg, ifaddrmsg, rtmsg)
    return _classes


class Op:
    """One request: its message (encoded when sent), what it is called in errors, the
    errno codes that mean done (the answer is then None) and whether it is a dump."""

    def __init__(self, msg, what: str, ok: tuple[int, ...] = (), dump: bool = False, keep=None):
        self.msg, self.what, self.ok, self.dump, self.keep = msg, what, ok, dump, keep


def op(kind: str, cmd: str, /, ok: tuple[int, ...] = (), **kw) -> Op:
    """A request for IPRoute.batch: op("link", "set", ifname="lo", state="up"), with ok
    the errno codes that mean done (nl.EXISTS, nl.GONE)."""
    build = {"link": _link_op, "addr": _addr_op, "route": _route_op}.get(kind)
    if build is None:
        raise ValueError(f"netlink: no request of kind {kind!r}")
    request = build(cmd, kw)
    request.ok = ok
    return request


def _flags(cmd: str) -> int:
    if cmd == "add":
        return NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    if cmd in ("set", "del"):
        return NLM_F_REQUEST | NLM_F_ACK
    if cmd == "get":
        return NLM_F_REQUEST  # the answer is the object, or an error
    raise ValueError(f"netlink: unknown command {cmd!r}")


def _link_attrs(kw: dict) -> list:
    attrs = []
    for key, value in kw.items():
        name = f"IFLA_{key.upper()}"
        if name not in _link_nlas:
            raise TypeError(f"netlink link: unknown argument {key!r}")
        attrs.append((name, value))
    return attrs


def _link_op(cmd: str, kw: dict) -> Op:
    """RTM_NEWLINK/DELLINK/GETLINK. index= or ifname= names the link (ifname= alone on
    set/del/get: looked up by the kernel); kind= (with peer= for a veth: ifname, address,
    net_ns_fd of the end made in another netns), state="up"/"down", and any IFLA_ of one
    value by its lower-case name (master, address, ifalias, mtu, net_ns_fd, ...)."""
    ifinfmsg, _, _ = _lean_import()
    kw = dict(kw)
    msg = ifinfmsg()
    msg["family"] = 0
    msg["index"] = kw.pop("index", 0)
    state, kind, peer = kw.pop("state", None), kw.pop("kind", None), kw.pop("peer", None)
    if state is not None:
        if state not in ("up", "down"):
            raise ValueError(f"netlink link: state {state!r}")
        msg["change"], msg["flags"] = IFF_UP, IFF_UP if state == "up" else 0
    msg["attrs"] = _link_attrs(kw)
    if kind is not None:
        info = [("IFLA_INFO_KIND", kind)]
        if peer is not None:
            if kind != "veth":
                raise TypeError("netlink link: peer= is for a veth")
            info.append(("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {
                "attrs": _link_attrs(peer), "family": 0, "index": 0, "flags": 0, "change": 0})]}))
        msg["attrs"].append(("IFLA_LINKINFO", {"attrs": info}))
    if cmd == "get":
        msg["attrs"].append(("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS))
    msg["header"]["flags"] = _flags(cmd)
    msg["header"]["type"] = {"add": RTM_NEWLINK, "set": RTM_NEWLINK, "del": RTM_DELLINK, "get": RTM_GETLINK}[cmd]
    target = kw.get("ifname") or (f"#{msg['index']}" if msg["index"] else "")
    return Op(msg, f"link {cmd} {target}".strip())


def _addr_op(cmd: str, kw: dict) -> Op:
    """RTM_NEWADDR/DELADDR of an IPv4 address: index, address, prefixlen."""
    _, ifaddrmsg, _ = _lean_import()
    kw = dict(kw)
    msg = ifaddrmsg()
    address = kw.pop("address")
    msg["family"], msg["prefixlen"] = socket.AF_INET, kw.pop("prefixlen", 32)
    msg["index"], msg["flags"], msg["scope"] = kw.pop("index"), 0, RT_SCOPE_UNIVERSE
    msg["attrs"] = [("IFA_LOCAL", kw.pop("local", address)), ("IFA_ADDRESS", address)]
    _header(msg, "addr", cmd, kw, {"add": RTM_NEWADDR, "del": RTM_DELADDR})
    return Op(msg, f"addr {cmd} {address}/{msg['prefixlen']}")


def _header(msg, what: str, cmd: str, unused: dict, types: dict[str, int]) -> None:
    """The request's type and flags for cmd, once every argument was taken (none left unused)."""
    if unused:
        raise TypeError(f"netlink {what}: unknown arguments {sorted(unused)}")
    if cmd not in types:
        raise ValueError(f"netlink {what}: unknown command {cmd!r}")
    msg["header"]["type"], msg["header"]["flags"] = types[cmd], _flags(cmd)


def _route_op(cmd: str, kw: dict) -> Op:
    """RTM_NEWROUTE/DELROUTE of an IPv4 route in the main table: dst ("0.0.0.0/0" or
    "a.b.c.d/n"), gateway, oif; proto static, as pyroute2 and `ip route` make them."""
    _, _, rtmsg = _lean_import()
    kw = dict(kw)
    dst, _, length = kw.pop("dst", "0.0.0.0/0").partition("/")
    msg = rtmsg()
    msg["family"], msg["dst_len"], msg["src_len"], msg["tos"] = socket.AF_INET, int(length or 32), 0, 0
    msg["table"], msg["proto"], msg["scope"], msg["type"], msg["flags"] = \
        RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0
    msg["attrs"] = [("RTA_TABLE", RT_TABLE_MAIN)]
    if msg["dst_len"]:
        msg["attrs"].append(("RTA_DST", dst))
    for key in ("gateway", "oif"):
        if key in kw:
            msg["attrs"].append((f"RTA_{key.upper()}", kw.pop(key)))
    _header(msg, "route", cmd, kw, {"add": RTM_NEWROUTE, "del": RTM_DELROUTE})
    return Op(msg, f"route {cmd} {dst}/{msg['dst_len']}")


def _dump_op(cls, msg_type: int, family: int, keep, what: str) -> Op:
    msg = cls()
    for name, _ in cls.fields:
        if not name.startswith("__"):
            msg[name] = 0
    msg["family"] = family
    msg["header"]["type"], msg["header"]["flags"] = msg_type, NLM_F_REQUEST | NLM_F_DUMP
    return Op(msg, what, dump=True, keep=keep)


class IPRoute:
    """A NETLINK_ROUTE socket of the namespace it was opened in; close it (or use it as a
    context manager)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            self.sock.bind((0, 0))
            self.sock.settimeout(TIMEOUT)
        except OSError:
            self.sock.close()
            raise
        self.seq = 0
        self.buf = bytearray(RECV_SIZE)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.sock.close()

    # --- the exchange ---------------------------------------------------------

    def batch(self, *ops: Op) -> list:
        """Send the requests in one sendmsg (BATCH at most each), read every answer; a list
        with, per request, its messages ([] for an ack, None for an error it tolerates). The
        kernel runs them in order, each whether one before failed or not; the first error
        not tolerated is raised once all are answered, so the socket stays in step."""
        if sum(o.dump for o in ops) > 1:
            raise ValueError("netlink: one dump per batch (the kernel runs one at a time per socket)")
        answers, error = [], None
        for start in range(0, len(ops), BATCH):  # every answer must fit the receive queue at once
            got, failed = self._exchange(ops[start:start + BATCH])
            answers += got
            error = error or failed
        if error is not None:
            raise error
        return answers

    def _exchange(self, ops: tuple[Op, ...]) -> tuple[list, NetlinkError | None]:
        payload, pending = bytearray(), {}
        for o in ops:
            self.seq += 1
            o.msg["header"]["sequence_number"], o.msg["header"]["pid"] = self.seq, 0
            o.msg.reset()
            o.msg.encode()
            payload += o.msg.data
            payload += bytes(-len(payload) % 4)
            pending[self.seq] = o
        self.sock.sendto(bytes(payload), (0, 0))
        answers: dict[int, list | None] = {seq: [] for seq in pending}
        error, interrupted = None, set()
        while pending:
            for seq, msg_type, flags, offset, length in self._recv():
                o = pending.get(seq)
                if o is None:
                    continue  # not ours (an earlier exchange abandoned by an exception)
                if flags & NLM_F_DUMP_INTR:
                    interrupted.add(seq)
                if msg_type == NLMSG_ERROR or (msg_type == NLMSG_DONE and o.dump):
                    code = -struct.unpack_from("=i", self.buf, offset + HEADER.size)[0] \
                        if length >= HEADER.size + 4 else 0
                    if msg_type == NLMSG_DONE and code == 0 and seq in interrupted:
                        code = errno.EINTR  # the table changed under the dump: ask again
                    del pending[seq]
                    if code:
                        answers[seq] = None
                        if code not in o.ok and error is None:
                            error = NetlinkError(code, f"netlink {o.what}: {os.strerror(code)}")
                    continue
                if msg_type < NLMSG_MIN_TYPE:
                    continue  # NLMSG_NOOP, NLMSG_OVERRUN: nothing of the answer
                msg = self._decode(o, offset, length)
                if msg is not None:
                    answers[seq].append(msg)
                if not o.dump and not o.msg["header"]["flags"] & NLM_F_ACK:
                    del pending[seq]  # a get: its one answer
        return [answers[seq] for seq in sorted(answers)], error

    def _recv(self):
        """The messages of one datagram: (seq, type, flags, offset, length) in self.buf."""
        size = self.sock.recv_into(self.buf, len(self.buf), socket.MSG_PEEK | socket.MSG_TRUNC)
        if size > len(self.buf):
            self.buf = bytearray(size)
        size = self.sock.recv_into(self.buf, len(self.buf))
        offset, found = 0, []
        while offset + HEADER.size <= size:
            length, msg_type, flags, seq, _ = HEADER.unpack_from(self.buf, offset)
            if length < HEADER.size or offset + length > size:
                raise NetlinkError(errno.EBADMSG, "netlink: a truncated message from the kernel")
            found.append((seq, msg_type, flags, offset, length))
            offset += (length + 3) & ~3
        return found

    def _decode(self, o: Op, offset: int, length: int):
        msg = type(o.msg)(bytearray(self.buf[offset:offset + length]))
        msg.decode()
        return msg if o.keep is None or o.keep(msg) else None

    def request(self, o: Op) -> list | None:
        return self.batch(o)[0]

    def dump(self, make) -> list:
        """A dump, asked again (a few times) when the kernel says it was interrupted by a change."""
        for attempt in range(DUMP_TRIES):
            try:
                return self.request(make())
            except NetlinkError as e:
                if e.code != errno.EINTR or attempt == DUMP_TRIES - 1:
                    raise
        return []

    # --- IPRoute's calls ------------------------------------------------------

    def link(self, cmd: str, **kw) -> list:
        return self.request(op("link", cmd, **kw))

    def addr(self, cmd: str, **kw) -> list:
        return self.request(op("addr", cmd, **kw))

    def route(self, cmd: str, **kw) -> list:
        return self.request(op("route", cmd, **kw))

    def link_lookup(self, ifname: str) -> list[int]:
        found = self.request(op("link", "get", ok=GONE, ifname=ifname))
        return [m["index"] for m in found or []]

    def get_links(self) -> list:
        ifinfmsg, _, _ = _lean_import()
        return self.dump(lambda: _dump_op(ifinfmsg, RTM_GETLINK, socket.AF_UNSPEC, None, "link dump"))

    def get_addr(self, index: int | None = None, family: int = socket.AF_INET) -> list:
        _, ifaddrmsg, _ = _lean_import()
        keep = None if index is None else (lambda m: m["index"] == index)
        return self.dump(lambda: _dump_op(ifaddrmsg, RTM_GETADDR, family, keep, "addr dump"))

    def get_routes(self, family: int = socket.AF_INET, table: int | None = None) -> list:
        _, _, rtmsg = _lean_import()
        keep = None if table is None else (lambda m: (m.get_attr("RTA_TABLE") or m["table"]) == table)
        return self.dump(lambda: _dump_op(rtmsg, RTM_GETROUTE, family, keep, "route dump"))


def iproute(netns: str | None = None) -> IPRoute:
    """A netlink socket on the host, or inside the namespace pinned at netns.

    A netlink socket belongs to the namespace it was opened in, so setns there, open it,
    and come back (cheaper than pyroute2's own netns=, which forks)."""
    if netns is None:
        return IPRoute()
    back = linux.enter_netns(netns)
    try:
        return IPRoute()
    finally:
        linux.leave_netns(back)


def tolerate(codes: tuple[int, ...], fn, *args, **kwargs):
    """Call a netlink request; the given errno codes (EEXIST, ENODEV, ...) mean done."""
    try:
        return fn(*args, **kwargs)
    except NetlinkError as e:
        if e.code not in codes:
            raise
        return None


def attr(msg, name: str, default=None):
    value = msg.get_attr(name)
    return value if value is not None else default


def link(ipr, name: str):
    """The link message of name, or None (one request: the kernel looks the name up)."""
    found = ipr.request(op("link", "get", ok=GONE, ifname=name))
    return found[0] if found else None


def kind(msg) -> str | None:
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info else None


def is_up(msg) -> bool:
    return bool(msg["flags"] & IFF_UP)


def addresses(ipr, index: int) -> set[str]:
    return {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=index, family=2)}
