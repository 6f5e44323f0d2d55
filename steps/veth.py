"""The veth stage: the container's network namespace, pinned, wired to the instance bridge.

apply: netns pinned (a bind mount under the runtime dir, so the stage works and is
checkable before any process exists), the bridge, an IP lease, a veth pair whose peer
is created directly inside the netns as eth0 (cheaper than creating it on the host and
moving it) with a MAC derived from the lease, lo and eth0 up, the default route via the
gateway, and /etc/hosts, /etc/hostname, /etc/resolv.conf rendered into the container's
directory. `--network none` stops after the pin: the netns has lo only. `--network host`
has nothing here (the init stays in the host's netns; runtime/plan.py copies the host's files).

Every container's netns refuses IPv6 router advertisements (accept_ra 0 for all, default
and every device there - lo, eth0 - set before eth0 is up): a peer with CAP_NET_RAW could
otherwise announce itself as a router and take the container's IPv6 traffic (CVE-2020-13401).
"""
from __future__ import annotations

import errno
import os

from steps import Change, Step, absent, applied, faults, ipam, linux, nothing, partial, resolver
from steps import netlink as nl
from steps import network as net
from steps.names import Names
from steps.networks import attached, joined
from steps.state import instance_lock, read_value, update_record, write_json, write_value

IPV6_CONF = "/proc/sys/net/ipv6/conf"


def pinned(path: str) -> bool:
    """Whether a network namespace is bound on path: the file is then nsfs's (one stat each,
    not a parse of mountinfo, which grows with every container's mounts)."""
    try:
        return os.lstat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def ipv6_devices() -> list[str]:
    """all and default first (a device made later takes default), then the current netns's
    devices; none when the kernel has no IPv6."""
    try:
        devices = os.listdir(IPV6_CONF)
    except FileNotFoundError:
        return []
    return ["all", "default"] + sorted(d for d in devices if d not in ("all", "default"))


def accept_ra(netns: str) -> dict[str, str]:
    """accept_ra of all, default and every device inside the netns pinned at netns (empty
    without IPv6). /proc/sys/net answers for the netns of the thread that opens the file,
    so enter it, read, and come back."""
    back = linux.enter_netns(netns)
    try:
        values = {dev: read_value(f"{IPV6_CONF}/{dev}/accept_ra") for dev in ipv6_devices()}
    finally:
        linux.leave_netns(back)
    return {dev: value for dev, value in values.items() if value is not None}


def refuse_router_ads(netns: str) -> None:
    """accept_ra 0 for all, default and every device inside the netns (a no-op without IPv6)."""
    back = linux.enter_netns(netns)
    try:
        for dev in ipv6_devices():
            path = f"{IPV6_CONF}/{dev}/accept_ra"
            if read_value(path) not in (None, "0"):
                write_value(path, "0")
    finally:
        linux.leave_netns(back)


def ra_changes(netns: str) -> list[Change]:
    return [Change(f"net.ipv6.conf.{dev}.accept_ra in the netns", value, "0")
            for dev, value in accept_ra(netns).items() if value != "0"]


class Wire:
    """One network the container joins (a copy of the instance for a user network, see
    steps/networks.py): its bridge, its lease, the veth pair and the inside end, eth<index>.
    The first network is the primary one: its gateway is the default route."""

    def __init__(self, instance, container: str, spec: dict, index: int):
        self.inst, self.spec = instance, spec
        self.names = Names(instance, container)
        self.iface, self.primary = f"eth{index}", index == 0

    @property
    def label(self) -> str:
        return self.inst.network_name or "bridge"

    def check(self, leases: dict[str, str]) -> tuple[str | None, object, list[Change]]:
        """(its lease, its host end, what differs)."""
        n, inst = self.names, self.inst
        lease = leases.get(n.container)
        with nl.iproute() as ipr:
            host_end = nl.link(ipr, n.host_veth)
            br, missing = net.bridge_state(ipr, inst)
        changes = [Change(m) for m in missing]
        if lease is None:
            return None, host_end, changes + [Change("lease an address", "none", f"from {inst.subnet}"),
                                              Change(f"veth {n.host_veth} <-> {self.iface}")]
        if host_end is None or br is None or host_end.get_attr("IFLA_MASTER") != br["index"] \
                or not nl.is_up(host_end):
            changes.append(Change(f"veth {n.host_veth} on {inst.bridge}", "missing or detached", "up"))
        elif pinned(n.netns):
            changes += self.inside_changes(lease)
        if self.aliases() != ipam.aliases(inst).get(n.container, []):
            changes.append(Change(f"aliases on {self.label}", "", ", ".join(self.aliases())))
        return lease, host_end, changes

    def aliases(self) -> list[str]:
        return net.aliases_on(self.spec, self.label, self.primary)

    def inside_changes(self, lease: str) -> list[Change]:
        want = f"{lease}/{self.inst.network.prefixlen}"
        with nl.iproute(self.names.netns) as ns:
            dev = nl.link(ns, self.iface)
            if dev is None:
                return [Change(f"{self.iface} in the netns", "missing", want)]
            have = nl.addresses(ns, dev["index"])
            routes = [r for r in ns.get_routes(family=2, table=254) if not r["dst_len"]]
            gw = net.gateway(self.inst)
        changes = [] if want in have and nl.is_up(dev) else [Change(self.iface, ",".join(sorted(have)), want)]
        mac = dev.get_attr("IFLA_ADDRESS")
        if mac != net.mac_of(lease):  # the nat stage's anti-spoofing rules drop frames from any other
            changes.append(Change(f"{self.iface} MAC", mac or "none", net.mac_of(lease)))
        if self.primary and not any(r.get_attr("RTA_GATEWAY") == gw for r in routes):
            changes.append(Change("default route", "none", f"via {gw}"))
        return changes

    def apply(self) -> str:
        n, inst = self.names, self.inst
        record_ip = ((self.spec.get("last") or {}).get("ips") or {}).get(self.label) if not self.primary \
            else (self.spec.get("last") or {}).get("ip")
        with nl.iproute() as ipr:
            bridge = net.ensure_bridge(ipr, inst)
            lease = ipam.allocate(n, record_ip, self.aliases())
            host_end = nl.link(ipr, n.host_veth)
            if host_end is not None and (host_end.get_attr("IFLA_MASTER") != bridge
                                         or not self.has_iface()):  # detached, or its peer is not in our netns
                nl.tolerate(nl.GONE, ipr.link, "del", index=host_end["index"])
                host_end = None
            fd, make = None, []
            try:  # one round trip: the pair (its peer made inside the netns), the host end up
                if host_end is None:
                    fd = os.open(n.netns, os.O_RDONLY | os.O_CLOEXEC)
                    make = [nl.op("link", "add", ok=nl.EXISTS, ifname=n.host_veth, kind="veth", master=bridge,
                                  state="up", peer={"ifname": self.iface, "address": net.mac_of(lease),
                                                    "net_ns_fd": fd})]
                ipr.batch(*make, nl.op("link", "set", ifname=n.host_veth, state="up"))
            finally:
                if fd is not None:
                    os.close(fd)
        self.configure_inside(lease)
        return lease

    def has_iface(self) -> bool:
        with nl.iproute(self.names.netns) as ns:
            return bool(ns.link_lookup(ifname=self.iface))

    def configure_inside(self, lease: str) -> None:
        """The MAC of the lease (an end left by a killed run may lack it; apply has already
        refused router advertisements on every device there) before it goes up; then its
        address and, on the primary network, the default route."""
        inst = self.inst
        with nl.iproute(self.names.netns) as ns:  # two round trips (a third to fix the MAC)
            dev = ns.batch(nl.op("link", "set", ifname="lo", state="up"),
                           nl.op("link", "get", ifname=self.iface))[1][0]
            if dev.get_attr("IFLA_ADDRESS") != net.mac_of(lease):
                ns.link("set", index=dev["index"], address=net.mac_of(lease))
            route = [nl.op("route", "add", ok=nl.EXISTS, dst="0.0.0.0/0", gateway=net.gateway(inst))] \
                if self.primary else []
            ns.batch(nl.op("addr", "add", ok=nl.EXISTS, index=dev["index"], address=lease,
                           prefixlen=inst.network.prefixlen),
                     nl.op("link", "set", index=dev["index"], state="up"),  # then the gateway is reachable:
                     *route)

    def undo(self, ipr) -> None:
        """Its host end (the peer goes with it); the network's bridge, table and accepts when this
        was its last container."""
        n = self.names
        others = {k: v for k, v in ipam.load(self.inst).items() if k != n.container}
        nl.tolerate(nl.GONE, ipr.link, "del", ifname=n.host_veth)
        faults.point("veth.undo.mid")
        if not others:  # the last container of this network: its shared objects go too
            remove_shared(ipr, self.inst)


class VethStep(Step):
    name = "veth"

    @property
    def bridged(self) -> bool:
        return bool(joined(self.ctx.spec))

    @property
    def host(self) -> bool:
        """--network host: the host's own namespace; nothing of ours to make (the init takes
        the host's hosts and resolv.conf)."""
        return self.ctx.spec.get("network") == "host"

    def wires(self, strict: bool = True) -> list[Wire]:
        """One per network joined, the primary first (strict=False: a network whose record went
        is still taken apart, by the names derived from its name)."""
        on = attached(self.ctx.instance, self.ctx.spec, strict)
        return [Wire(v, self.ctx.names.container, self.ctx.spec, i) for i, v in enumerate(on)]

    def check(self):
        if self.host:
            return nothing("the host's network namespace")
        n = self.ctx.names
        changes = ra_changes(n.netns) if pinned(n.netns) else [Change(f"pin a network namespace on {n.netns}")]
        present, leases = pinned(n.netns), []
        for wire in self.wires(strict=False):
            lease, host_end, more = wire.check(ipam.load(wire.inst))
            changes += more
            leases.append((wire, lease))
            present = present or lease is not None or host_end is not None
        if not leases:
            present = present or os.path.exists(f"/sys/class/net/{n.host_veth}")  # left by an older spec
        primary = leases[0][1] if leases else None
        if leases and all(lease for _, lease in leases):
            changes += self.file_changes(primary)
        elif not leases and not changes:
            changes += self.file_changes(None)  # lo only: no peers to list
        if not changes:
            warn = "" if self.has_nameserver(primary) else "; no nameserver the container can reach"
            via = ", ".join(f"{lease} via {w.names.host_veth}" for w, lease in leases) or "no network via lo only"
            return applied(f"{via}{warn}")
        return (partial if present else absent)(changes)

    def has_nameserver(self, lease: str | None) -> bool:
        """The instance's resolver asks the host's nameservers from the host (a loopback one
        too); --dns and --network none containers ask theirs directly."""
        if self.ctx.spec.get("dns"):
            return True
        if lease:
            lines = net.resolv_lines(net.host_resolv_conf()) or []
            return any(ln.split()[:1] == ["nameserver"] and len(ln.split()) > 1 for ln in lines)
        return bool(net.nameservers()[0])

    def file_changes(self, lease: str | None) -> list[Change]:
        """hostname and resolv.conf as rendered; hosts with this container's own line (the
        container may add lines of its own). Peers' names are the instance resolver's."""
        n = self.ctx.names
        want = net.etc_files(n, self.ctx.spec, lease)
        own = want["hosts"].splitlines()[3]
        changes = []
        for name, text in want.items():
            path = os.path.join(n.etc_dir, name)
            try:
                with open(path, errors="replace") as f:
                    have = f.read(1 << 20)  # the container can write this file: never read it whole
            except OSError:
                have = None
            ok = have is not None and (own in have.splitlines() if name == "hosts" else have == text)
            if not ok:
                warn = "no nameserver a container can reach" if name == "resolv.conf" and "nameserver" not in text \
                    else ""
                changes.append(Change(f"render {path}", "", warn))
        if lease and resolver.running(n.instance) is None:  # killed: an apply (or network.repair) starts it
            changes.append(Change("the instance's resolver (127.0.0.11)", "not running", "running"))
        return changes

    def apply(self):
        n = self.ctx.names
        if self.host:
            return
        with instance_lock(n.instance):
            self.pin()
            refuse_router_ads(n.netns)  # every device there, and default: an interface made later inherits it
            faults.point("veth.apply.mid")
            wires = self.wires()
            if wires:
                resolver.start(n.instance)  # its start overlaps the wiring; serve() below waits for it
            ips = {wire.label: wire.apply() for wire in wires}
            lease = next(iter(ips.values()), None)
            for name, text in net.etc_files(n, self.ctx.spec, lease).items():
                net.write_in_place(os.path.join(n.etc_dir, name), text)
            if lease:
                resolver.serve(n.instance, n.container)  # started by the first container (or after a kill)
                update_record(n, ip=lease, **({"ips": ips} if len(ips) > 1 or "bridge" not in ips else {}))

    def pin(self) -> None:
        n = self.ctx.names
        os.makedirs(n.runtime_dir, exist_ok=True)
        os.makedirs(n.etc_dir, exist_ok=True)
        if not pinned(n.netns):
            if not os.path.exists(n.netns):
                write_json(n.netns, {})  # the mount point: any file
            linux.pin_netns(n.netns)

    def undo(self):
        """Host ends (their peers go with them), then - for a network whose last container this
        was - its bridge and table, then the pin, and the leases last: until a lease is freed,
        check still sees something of this step, so a killed undo is redone."""
        n = self.ctx.names
        if self.host and not pinned(n.netns):
            return
        with instance_lock(n.instance):
            wires = self.wires(strict=False)
            stale = not wires and os.path.exists(f"/sys/class/net/{n.host_veth}")
            if wires or stale:
                with nl.iproute() as ipr:  # (a --network none container needs no netlink at all)
                    for wire in wires:
                        wire.undo(ipr)
                    if stale:
                        nl.tolerate(nl.GONE, ipr.link, "del", ifname=n.host_veth)
                        faults.point("veth.undo.mid")
            else:
                faults.point("veth.undo.mid")
            anyone = any(k != n.container for leases in ipam.anywhere(n.instance).values() for k in leases)
            if anyone:
                resolver.drop(n.instance, n.container)  # its sockets hold the netns alive
            else:
                resolver.stop(n.instance)  # with the last container, as the bridge
            self.unpin()
            for wire in wires:
                ipam.release(wire.names)
            if not wires:
                ipam.release(n)

    def unpin(self) -> None:
        path = self.ctx.names.netns
        while pinned(path):
            linux.umount(path, linux.MNT_DETACH)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise


def remove_shared(ipr, instance) -> None:
    """The instance's firewall accepts, nft table and bridge (once no container uses them)."""
    from steps.firewall import remove_rules
    from steps.nat import drop_table

    remove_rules(instance)
    drop_table(instance)
    net.remove_bridge(ipr, instance)


def prune(instance) -> list[str]:
    """The instance's network goes (resolver, firewall accepts, nft table, bridge), unless
    containers hold leases: then their names, and nothing changed."""
    with instance_lock(instance):
        leases = ipam.load(instance)
        if leases:
            return sorted(leases)
        ipam.save(instance, {})
        if not ipam.anywhere(instance):  # the resolver serves every network's containers
            resolver.stop(instance)
        with nl.iproute() as ipr:
            remove_shared(ipr, instance)
    return []
