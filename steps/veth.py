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


class VethStep(Step):
    name = "veth"

    @property
    def bridged(self) -> bool:
        return self.ctx.spec.get("network", "bridge") == "bridge"

    @property
    def host(self) -> bool:
        """--network host: the host's own namespace; nothing of ours to make (the init takes
        the host's hosts and resolv.conf)."""
        return self.ctx.spec.get("network") == "host"

    def check(self):
        if self.host:
            return nothing("the host's network namespace")
        n = self.ctx.names
        changes = ra_changes(n.netns) if pinned(n.netns) else [Change(f"pin a network namespace on {n.netns}")]
        leases = ipam.load(n.instance)
        lease = leases.get(n.container)
        host_end = None
        if self.bridged or os.path.exists(f"/sys/class/net/{n.host_veth}"):
            with nl.iproute() as ipr:
                host_end = nl.link(ipr, n.host_veth)
                if self.bridged:
                    changes += self.wiring(ipr, host_end, lease, leases)
        if not self.bridged and not changes:
            changes += self.file_changes(None, {})  # lo only: no peers to list
        present = pinned(n.netns) or lease or host_end is not None
        if not changes:
            warn = "" if self.has_nameserver(lease) else "; no nameserver the container can reach"
            return applied(f"{lease or 'no network'} via {n.host_veth if lease else 'lo only'}{warn}")
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

    def wiring(self, ipr, host_end, lease: str | None, leases: dict[str, str]) -> list[Change]:
        n, inst = self.ctx.names, self.ctx.instance
        br, missing = net.bridge_state(ipr, inst)
        changes = [Change(m) for m in missing]
        if lease is None:
            return changes + [Change("lease an address", "none", f"from {inst.subnet}"),
                              Change(f"veth {n.host_veth} <-> eth0")]
        if host_end is None or br is None or host_end.get_attr("IFLA_MASTER") != br["index"] \
                or not nl.is_up(host_end):
            changes.append(Change(f"veth {n.host_veth} on {inst.bridge}", "missing or detached", "up"))
        elif pinned(n.netns):
            changes += self.inside_changes(lease)
        return changes + self.file_changes(lease, leases)

    def inside_changes(self, lease: str) -> list[Change]:
        want = f"{lease}/{self.ctx.instance.network.prefixlen}"
        with nl.iproute(self.ctx.names.netns) as ns:
            eth0 = nl.link(ns, "eth0")
            if eth0 is None:
                return [Change("eth0 in the netns", "missing", want)]
            have = nl.addresses(ns, eth0["index"])
            routes = [r for r in ns.get_routes(family=2, table=254) if not r["dst_len"]]
            gw = net.gateway(self.ctx.instance)
        changes = [] if want in have and nl.is_up(eth0) else [Change("eth0", ",".join(sorted(have)), want)]
        mac = eth0.get_attr("IFLA_ADDRESS")
        if mac != net.mac_of(lease):  # the nat stage's anti-spoofing rules drop frames from any other
            changes.append(Change("eth0 MAC", mac or "none", net.mac_of(lease)))
        if not any(r.get_attr("RTA_GATEWAY") == gw for r in routes):
            changes.append(Change("default route", "none", f"via {gw}"))
        return changes

    def file_changes(self, lease: str | None, leases: dict) -> list[Change]:
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
            refuse_router_ads(n.netns)  # every device there, and default: an eth0 made later inherits it
            faults.point("veth.apply.mid")
            if self.bridged:
                resolver.start(n.instance)  # its start overlaps the wiring; serve() below waits for it
            lease = self.wire() if self.bridged else None
            for name, text in net.etc_files(n, self.ctx.spec, lease).items():
                net.write_in_place(os.path.join(n.etc_dir, name), text)
            if lease:
                resolver.serve(n.instance, n.container)  # started by the first container (or after a kill)
                update_record(n, ip=lease)

    def pin(self) -> None:
        n = self.ctx.names
        os.makedirs(n.runtime_dir, exist_ok=True)
        os.makedirs(n.etc_dir, exist_ok=True)
        if not pinned(n.netns):
            if not os.path.exists(n.netns):
                write_json(n.netns, {})  # the mount point: any file
            linux.pin_netns(n.netns)

    def wire(self) -> str:
        n, inst = self.ctx.names, self.ctx.instance
        record_ip = (self.ctx.spec.get("last") or {}).get("ip")
        with nl.iproute() as ipr:
            bridge = net.ensure_bridge(ipr, inst)
            lease = ipam.allocate(n, record_ip)
            host_end = nl.link(ipr, n.host_veth)
            if host_end is not None and (host_end.get_attr("IFLA_MASTER") != bridge
                                         or not self.has_eth0()):  # detached, or its peer is not in our netns
                nl.tolerate(nl.GONE, ipr.link, "del", index=host_end["index"])
                host_end = None
            fd, make = None, []
            try:  # one round trip: the pair (its peer made inside the netns as eth0), the host end up
                if host_end is None:
                    fd = os.open(n.netns, os.O_RDONLY | os.O_CLOEXEC)
                    make = [nl.op("link", "add", ok=nl.EXISTS, ifname=n.host_veth, kind="veth", master=bridge,
                                  state="up", peer={"ifname": "eth0", "address": net.mac_of(lease), "net_ns_fd": fd})]
                ipr.batch(*make, nl.op("link", "set", ifname=n.host_veth, state="up"))
            finally:
                if fd is not None:
                    os.close(fd)
        self.configure_inside(lease)
        return lease

    def has_eth0(self) -> bool:
        with nl.iproute(self.ctx.names.netns) as ns:
            return bool(ns.link_lookup(ifname="eth0"))

    def configure_inside(self, lease: str) -> None:
        """The MAC of the lease (an eth0 left by a killed run may lack it; apply has already
        refused router advertisements on every device there) before eth0 goes up; then its
        address and the default route."""
        inst = self.ctx.instance
        with nl.iproute(self.ctx.names.netns) as ns:  # two round trips (a third to fix the MAC)
            eth0 = ns.batch(nl.op("link", "set", ifname="lo", state="up"), nl.op("link", "get", ifname="eth0"))[1][0]
            if eth0.get_attr("IFLA_ADDRESS") != net.mac_of(lease):
                ns.link("set", index=eth0["index"], address=net.mac_of(lease))
            ns.batch(nl.op("addr", "add", ok=nl.EXISTS, index=eth0["index"], address=lease,
                           prefixlen=inst.network.prefixlen),
                     nl.op("link", "set", index=eth0["index"], state="up"),  # then the gateway is reachable:
                     nl.op("route", "add", ok=nl.EXISTS, dst="0.0.0.0/0", gateway=net.gateway(inst)))

    def undo(self):
        """Host end (its peer goes with it), then - when this was the last lease - the
        bridge and the table, then the pin, and the lease last: until the lease is
        freed, check still sees something of this step, so a killed undo is redone."""
        n = self.ctx.names
        if self.host and not pinned(n.netns):
            return
        with instance_lock(n.instance):
            others = {k: v for k, v in ipam.load(n.instance).items() if k != n.container}
            if self.bridged or os.path.exists(f"/sys/class/net/{n.host_veth}"):
                with nl.iproute() as ipr:  # (a --network none container needs no netlink at all)
                    nl.tolerate(nl.GONE, ipr.link, "del", ifname=n.host_veth)
                    faults.point("veth.undo.mid")
                    if not others:  # the last container of the instance: its shared network goes too
                        remove_shared(ipr, n.instance)
            else:
                faults.point("veth.undo.mid")
            if others:
                resolver.drop(n.instance, n.container)  # its sockets hold the netns alive
            else:
                resolver.stop(n.instance)  # with the last container, as the bridge
            self.unpin()
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
        resolver.stop(instance)
        with nl.iproute() as ipr:
            remove_shared(ipr, instance)
    return []
