"""steps/netlink.py against the kernel: links, a veth whose peer is made in another netns,
addresses, routes, dumps, batches, errors as errno - all inside network namespaces the
test pins under its instance's root, never on the host."""
from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys

import pytest

from steps import linux
from steps import netlink as nl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def netns(inst):
    """pin(name) -> the path of a fresh netns pinned under the instance's root; all unpinned after."""
    made = []

    def pin(name: str) -> str:
        path = os.path.join(inst.root, f"ns-{name}")
        open(path, "w").close()
        linux.pin_netns(path)
        made.append(path)
        return path

    yield pin
    for path in made:
        linux.umount(path, linux.MNT_DETACH)
        os.unlink(path)


def socket_in(path: str, family=socket.AF_INET, kind=socket.SOCK_DGRAM) -> socket.socket:
    back = linux.enter_netns(path)
    try:
        return socket.socket(family, kind)
    finally:
        linux.leave_netns(back)


class Counting:
    """Stands for an IPRoute's socket, counting what goes through it."""

    def __init__(self, sock):
        self.sock, self.sent, self.received = sock, [], 0

    def sendto(self, data, addr):
        self.sent.append(data)
        return self.sock.sendto(data, addr)

    def recv_into(self, buf, size, flags=0):
        self.received += not flags & socket.MSG_PEEK
        return self.sock.recv_into(buf, size, flags)

    def close(self):
        self.sock.close()


def test_links_addresses_routes_and_dumps(netns):
    a = netns("a")
    with nl.iproute(a) as ipr:
        assert nl.link(ipr, "br-t") is None and ipr.link_lookup(ifname="br-t") == []
        ipr.link("add", ifname="br-t", kind="bridge")
        br = nl.link(ipr, "br-t")
        assert nl.kind(br) == "bridge" and not nl.is_up(br) and ipr.link_lookup(ifname="br-t") == [br["index"]]
        ipr.link("set", index=br["index"], ifalias="diy-docker /some/root")
        ipr.link("set", index=br["index"], ifname="br-u")
        ipr.link("set", index=br["index"], state="up")
        br = nl.link(ipr, "br-u")
        assert nl.attr(br, "IFLA_IFALIAS") == "diy-docker /some/root" and nl.is_up(br)
        assert nl.attr(br, "IFLA_MASTER", "none") == "none" and nl.link(ipr, "br-t") is None
        assert ipr.link("get", index=br["index"])[0].get_attr("IFLA_IFNAME") == "br-u"

        ipr.addr("add", index=br["index"], address="10.77.0.1", prefixlen=24)
        assert nl.tolerate(nl.EXISTS, ipr.addr, "add", index=br["index"], address="10.77.0.1", prefixlen=24) is None
        assert nl.addresses(ipr, br["index"]) == {"10.77.0.1/24"}
        assert nl.addresses(ipr, nl.link(ipr, "lo")["index"]) == set()  # lo is down: no 127.0.0.1 yet
        assert [(a.get_attr("IFA_ADDRESS"), a["index"]) for a in ipr.get_addr(family=2)] == \
            [("10.77.0.1", br["index"])]

        ipr.route("add", dst="0.0.0.0/0", gateway="10.77.0.254")
        ipr.route("add", dst="10.78.0.0/16", gateway="10.77.0.253")
        routes = {(r.get_attr("RTA_DST"), r["dst_len"], r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_OIF"))
                  for r in ipr.get_routes(family=2, table=254)}
        assert routes == {(None, 0, "10.77.0.254", br["index"]), ("10.78.0.0", 16, "10.77.0.253", br["index"]),
                          ("10.77.0.0", 24, None, br["index"])}
        local = ipr.get_routes(family=2, table=255)  # the local table: the address's own routes
        assert local and all(r.get_attr("RTA_TABLE") == 255 for r in local)
        assert len(ipr.get_routes(family=2)) == len(routes) + len(local)

        ipr.link("del", index=br["index"])
        assert nl.link(ipr, "br-u") is None and ipr.get_addr(family=2) == []


def test_errors_are_errno_and_the_socket_stays_in_step(netns):
    a = netns("a")
    with nl.iproute(a) as ipr:
        with pytest.raises(nl.NetlinkError) as e:
            ipr.link("del", ifname="missing0")
        assert isinstance(e.value, OSError) and e.value.errno == e.value.code == errno.ENODEV
        assert "link del missing0" in str(e.value)
        assert nl.tolerate(nl.GONE, ipr.link, "del", ifname="missing0") is None
        with pytest.raises(OSError) as e:
            nl.tolerate(nl.EXISTS, ipr.link, "del", ifname="missing0")
        assert e.value.errno == errno.ENODEV
        with pytest.raises(nl.NetlinkError) as e:
            ipr.link("get", index=4242)
        assert e.value.errno == errno.ENODEV
        ipr.link("add", ifname="b0", kind="bridge")
        with pytest.raises(nl.NetlinkError) as e:
            ipr.link("add", ifname="b0", kind="bridge")
        assert e.value.errno == errno.EEXIST
        with pytest.raises(nl.NetlinkError) as e:  # b0 is down and has no address: no way to the gateway
            ipr.route("add", dst="0.0.0.0/0", gateway="10.77.0.254")
        assert e.value.errno == errno.ENETUNREACH
        with pytest.raises(TypeError):
            ipr.link("set", ifname="b0", no_such_thing=1)
        # a batch reads every answer before it raises the first error it does not tolerate
        with pytest.raises(nl.NetlinkError) as e:
            ipr.batch(nl.op("link", "del", ifname="missing1"), nl.op("link", "set", ifname="b0", state="up"),
                      nl.op("link", "del", ifname="missing2"))
        assert "missing1" in str(e.value)
        assert nl.is_up(nl.link(ipr, "b0"))  # the kernel ran the request after the failed one
        got = ipr.batch(nl.op("link", "del", ok=nl.GONE, ifname="missing1"), nl.op("link", "get", ifname="b0"),
                        nl.op("link", "set", ifname="b0", state="down"))
        assert got[0] is None and got[1][0].get_attr("IFLA_IFNAME") == "b0" and got[2] == []
        with pytest.raises(ValueError):  # the kernel answers a second dump on a socket with EBUSY
            ipr.batch(nl.Op(None, "a dump", dump=True), nl.Op(None, "another", dump=True))


def test_a_batch_is_one_sendmsg(netns, monkeypatch):
    a = netns("a")
    with nl.iproute(a) as ipr:
        ipr.sock = counting = Counting(ipr.sock)
        answers = ipr.batch(nl.op("link", "add", ifname="b1", kind="bridge"),
                            nl.op("link", "set", ifname="b1", ifalias="mark"),
                            nl.op("link", "set", ifname="b1", state="up"),
                            nl.op("link", "get", ifname="b1"))
        assert len(counting.sent) == 1 and answers[:3] == [[], [], []]
        assert nl.attr(answers[3][0], "IFLA_IFALIAS") == "mark" and nl.is_up(answers[3][0])


def test_a_veth_whose_peer_is_made_in_another_netns(netns):
    a, b = netns("a"), netns("b")
    with nl.iproute(a) as ipr:
        ipr.link("add", ifname="br0", kind="bridge")
        br = nl.link(ipr, "br0")["index"]
        ipr.batch(nl.op("addr", "add", index=br, address="10.77.0.1", prefixlen=24),
                  nl.op("link", "set", index=br, state="up"))
        fd = os.open(b, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ipr.link("add", ifname="vh0", kind="veth", master=br, state="up",
                     peer={"ifname": "eth0", "address": "02:42:0a:4d:00:02", "net_ns_fd": fd})
        finally:
            os.close(fd)
        host_end = nl.link(ipr, "vh0")
        assert host_end.get_attr("IFLA_MASTER") == br and nl.is_up(host_end) and nl.kind(host_end) == "veth"
        assert nl.link(ipr, "eth0") is None  # the peer is not here
    with nl.iproute(b) as ns:
        eth0 = nl.link(ns, "eth0")
        assert eth0.get_attr("IFLA_ADDRESS") == "02:42:0a:4d:00:02" and nl.kind(eth0) == "veth"
        ns.batch(nl.op("link", "set", ifname="lo", state="up"),
                 nl.op("addr", "add", index=eth0["index"], address="10.77.0.2", prefixlen=24),
                 nl.op("link", "set", index=eth0["index"], state="up"),
                 nl.op("route", "add", dst="0.0.0.0/0", gateway="10.77.0.1"))
        assert any(r.get_attr("RTA_GATEWAY") == "10.77.0.1" for r in ns.get_routes(family=2, table=254))
    # traffic: from b's eth0 through the veth and the bridge to a
    rx, tx = socket_in(a), socket_in(b)
    with rx, tx:
        rx.bind(("10.77.0.1", 0))
        rx.settimeout(5)
        tx.sendto(b"hello", rx.getsockname())
        data, source = rx.recvfrom(100)
        assert data == b"hello" and source[0] == "10.77.0.2"
    with nl.iproute(a) as ipr:
        ipr.link("del", ifname="vh0")
    with nl.iproute(b) as ns:
        assert nl.link(ns, "eth0") is None  # the peer went with it


def test_a_dump_of_many_parts_is_read_to_its_end(netns):
    a = netns("a")
    with nl.iproute(a) as ipr:
        ipr.link("add", ifname="b2", kind="bridge")
        index = nl.link(ipr, "b2")["index"]
        ipr.sock = counting = Counting(ipr.sock)
        ipr.batch(*[nl.op("addr", "add", index=index, address=f"10.79.{i // 250}.{i % 250 + 1}", prefixlen=32)
                    for i in range(600)])  # more acks than the receive queue holds at once: several sendmsg
        assert len(counting.sent) == 600 // nl.BATCH + 1
        counting.received = 0
        assert len(nl.addresses(ipr, index)) == 600
        assert counting.received > 1  # ~50 KiB of answers: several datagrams, read to NLMSG_DONE
        assert len(ipr.get_addr(family=2)) == 600
        assert len(ipr.get_routes(family=2, table=255)) >= 600


def test_bridge_helpers_of_the_network_module(inst, netns):
    """ensure_bridge, bridge_state, overlaps and remove_bridge, acting in a netns of their own."""
    from steps import config
    from steps import network as net

    instance = config.load()
    with nl.iproute(netns("a")) as ipr:
        assert net.bridge_state(ipr, instance) == (None, [f"create bridge {instance.bridge}"])
        assert net.overlaps(ipr, instance) == []
        index = net.ensure_bridge(ipr, instance)
        br, missing = net.bridge_state(ipr, instance)
        assert br["index"] == index and missing == [] and nl.attr(br, "IFLA_IFALIAS") == net.marker(instance)
        assert net.ensure_bridge(ipr, instance) == index
        ipr.link("set", index=index, state="down")
        assert net.bridge_state(ipr, instance)[1] == [f"set {instance.bridge} up"]
        assert net.ensure_bridge(ipr, instance) == index and net.bridge_state(ipr, instance)[1] == []
        ipr.link("add", ifname="other0", kind="bridge")
        ipr.batch(nl.op("addr", "add", index=nl.link(ipr, "other0")["index"], address=str(instance.network[9]),
                        prefixlen=32),
                  nl.op("link", "set", ifname="other0", state="up"))
        assert net.overlaps(ipr, instance) == [f"address {instance.network[9]}/32"]
        net.remove_bridge(ipr, instance)
        assert nl.link(ipr, instance.bridge) is None
        ipr.link("add", ifname=instance.bridge, kind="bridge")  # not ours: no marker
        net.remove_bridge(ipr, instance)
        assert nl.link(ipr, instance.bridge) is not None


def test_importing_it_loads_neither_asyncio_nor_iproute():
    code = ("import sys; from steps import netlink as nl\n"
            "with nl.iproute() as ipr:\n"
            "    assert nl.link(ipr, 'lo')['index'] == 1 and ipr.get_addr(family=2) is not None\n"
            "print('asyncio' in sys.modules, sorted(m for m in sys.modules if m.startswith('pyroute2.iproute')"
            " or m.startswith('pyroute2.netlink.core') or m.startswith('pyroute2.ndb')))")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False []"
