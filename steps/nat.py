"""The nat stage: forwarding on, and the instance's own nftables table holding masquerade
for the subnet and DNAT for every published port of the instance's containers.

The table is rendered from templates/nftables.j2 out of all current leases (so a
re-render never drops another container's rules) and loaded with `nft -f` as one
transaction that deletes and recreates only this table. Every rule carries a comment;
check compares the comments of the rendered table with those `nft -j list table` shows.
Published ports reach the container from other hosts (prerouting) and from this host,
127.0.0.1 included (output + route_localnet on the bridge + masquerade of local sources
towards it), as Docker does without its userland proxy: no extra process per port.

Anti-spoofing (Docker has none): a second table of the same name in family bridge, in
the same transaction, filters what enters the bridge from each container's host veth
before it is bridged to a peer or handed to the host's ip hooks: IPv4 only from the
container's lease, ARP only for it, frames only from its MAC (derived from the lease,
so the bridge's forwarding database cannot be poisoned), and nothing else - no IPv6,
which we do not configure, so no router advertisements or neighbour spoofing either.
"""
from __future__ import annotations

import hashlib
import json
import subprocess

from steps import Change, Step, StepFailed, absent, applied, faults, ipam, nothing, partial
from steps import network as net
from steps.names import Names, veth_prefix
from steps.state import instance_lock
from steps.state import read_value as sysctl
from steps.state import write_value as set_sysctl

BASE_COMMENTS = {"diy:no-loopback-from-containers", "diy:jump:prerouting", "diy:jump:output", "diy:masquerade",
                 "diy:masquerade-local", "diy:masquerade-hairpin", "diy:forward:back", "diy:forward:published",
                 "diy:forward:out", "diy:forward:unpublished", "diy:antispoof-unknown-port"}
FAMILIES = ("ip", "bridge")  # one table name in each: nat and filtering in ip, anti-spoofing in bridge
ANTISPOOF_RULES = ("mac", "ipv4", "arp", "rest")  # the rules of a container's chain, as their comments end


def nft(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True)
    except FileNotFoundError:
        raise StepFailed("cannot run nft: install nftables (apt-get install nftables)") from None


def table_marker(instance) -> str:
    """Whose the table is (two instances could be given one table name): the comment of a
    counter rule, as nft's JSON does not carry table comments before 1.0.7."""
    return hashlib.sha256(instance.state_root.encode()).hexdigest()[:12]


def live_table(table: str, family: str = "ip") -> tuple[set[str], str] | None:
    """(the rule comments, the owner mark) of table in family, or None when it does not exist."""
    proc = nft(["-j", "list", "table", family, table])
    if proc.returncode != 0:
        return None
    items = json.loads(proc.stdout).get("nftables", [])
    comments = {i["rule"]["comment"] for i in items if "rule" in i and "comment" in i["rule"]}
    owner = next((c[len("diy:owner:"):] for c in comments if c.startswith("diy:owner:")), "")
    return comments - {f"diy:owner:{owner}"}, owner


def live_comments(table: str, family: str = "ip") -> set[str] | None:
    live = live_table(table, family)
    return None if live is None else live[0]


def ours(instance) -> set[str] | None:
    """The rule comments of our tables, both families together (None when neither exists);
    a foreign table of that name in either family is refused."""
    found = None
    for family in FAMILIES:
        live = live_table(instance.nft_table, family)
        if live is None:
            continue
        if live[1] != table_marker(instance):
            raise StepFailed(f"cannot use nft table {family} {instance.nft_table}: it exists and is not this "
                             "instance's; set another `nft_table:` in the config (or DIY_DOCKER_NFT_TABLE)")
        found = (found or set()) | live[0]
    return found


class NatStep(Step):
    name = "nat"

    @property
    def bridged(self) -> bool:
        return self.ctx.spec.get("network", "bridge") == "bridge"

    def sysctls(self) -> dict[str, str]:
        return {"/proc/sys/net/ipv4/ip_forward": "1",
                f"/proc/sys/net/ipv4/conf/{self.ctx.instance.bridge}/route_localnet": "1"}

    def own(self, comments) -> set[str]:
        """This container's rules among comments: its member rule, its ports, its anti-spoofing rules."""
        name = self.ctx.names.container
        mine = (f"diy:member:{name}:", f"diy:port:{name}:", f"diy:antispoof:{name}:")
        return {c for c in comments or () if c.startswith(mine)}

    def check(self):
        """Applied when the table's base rules and exactly this container's rules (for its
        current address and ports) are loaded; the others' rules are theirs to check."""
        if not self.bridged:
            return nothing("no network")
        inst, name = self.ctx.instance, self.ctx.names.container
        leases = ipam.load(inst)
        live = ours(inst)
        if name not in leases:
            return (partial if self.own(live) else absent)([Change("nat rules", "none", "after the veth stage")])
        want = self.own(wanted(inst, {name: leases[name]}))  # its own rules: no need to read the others' records
        changes = [Change(f"sysctl {p}", sysctl(p) or "-", v) for p, v in self.sysctls().items() if sysctl(p) != v]
        if live is None or not BASE_COMMENTS <= live or self.own(live) != want:
            have = "absent" if live is None else ", ".join(sorted(self.own(live))) or "no rules of its own"
            changes.append(Change(f"nft tables ip and bridge {inst.nft_table}", have, ", ".join(sorted(want))))
        if not changes:
            ports = sum(1 for c in want if c.startswith("diy:port:"))
            return applied(f"in ip {inst.nft_table} with {ports} published port(s), anti-spoofing in bridge "
                           f"{inst.nft_table}")
        return (partial if self.own(live) else absent)(changes)

    def apply(self):
        with instance_lock(self.ctx.instance):
            leases = ipam.load(self.ctx.instance)
            net.check_ports_free(self.ctx.names, self.ctx.spec.get("publish") or [])  # now, under the lock
            for path, value in self.sysctls().items():
                if sysctl(path) != value:
                    set_sysctl(path, value)
            faults.point("nat.apply.mid")
            self.load(leases, without=None)

    def undo(self):
        with instance_lock(self.ctx.instance):
            leases = ipam.load(self.ctx.instance)
            others = {k: v for k, v in leases.items() if k != self.ctx.names.container}
            faults.point("nat.undo.mid")
            if others:
                self.load(leases, without=self.ctx.names.container)
            else:
                drop_table(self.ctx.instance)

    def load(self, leases: dict, without: str | None) -> None:
        """Replace our tables with the rules of the containers in them now (at their current
        leases), plus this one on apply or less it on undo (without). Not every lease: a
        container between its nat and veth undo still holds one, and must not be put back
        by another container's re-render (its undo check would then fail)."""
        from steps.templating import render

        inst, me = self.ctx.instance, self.ctx.names.container
        present = in_table(ours(inst))  # ours() also refuses a foreign table of our name before replacing it
        keep = {n: ip for n, ip in leases.items() if n != without and (n in present or n == me)}
        members = [{"name": n, "ip": ip, "veth": Names(inst, n).host_veth, "mac": net.mac_of(ip)}
                   for n, ip in sorted(keep.items())]
        text = render("nftables.j2", table=inst.nft_table, bridge=inst.bridge, subnet=str(inst.network),
                      ports=net.published(inst, keep), members=members,
                      marker=table_marker(inst), veth_prefix=veth_prefix(inst))
        proc = nft(["-f", "-"], stdin=text)
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or ["nft failed without a message"])[0]
            raise StepFailed(f"cannot load nft table {inst.nft_table}: {why}")


def drop_table(instance) -> None:
    """Delete our tables (and only ours), both families in one transaction; a table already
    gone is fine (each is made, if missing, before it is deleted). Callers hold the instance lock."""
    if ours(instance) is None:
        return
    text = "".join(f"table {f} {instance.nft_table} {{}}\ndelete table {f} {instance.nft_table}\n" for f in FAMILIES)
    proc = nft(["-f", "-"], stdin=text)
    if proc.returncode != 0:
        raise StepFailed(f"cannot delete nft tables {instance.nft_table}: {proc.stderr.strip()}")


def in_table(comments: set[str] | None) -> set[str]:
    """The containers with rules in our tables (names cannot hold a colon)."""
    return {c.split(":")[2] for c in comments or () if c.startswith(("diy:member:", "diy:antispoof:"))}


def antispoof_comments(name: str, ip: str) -> set[str]:
    """The jump to a container's anti-spoofing chain and the rules of that chain."""
    return {f"diy:antispoof:{name}:{ip}"} | {f"diy:antispoof:{name}:{ip}:{rule}" for rule in ANTISPOOF_RULES}


def wanted(instance, leases: dict[str, str]) -> set[str]:
    """The rule comments the tables must hold for these leases."""
    ports = {p["comment"] for p in net.published(instance, leases)}
    members = {f"diy:member:{n}:{ip}" for n, ip in leases.items()}
    return BASE_COMMENTS | ports | members | {c for n, ip in leases.items() for c in antispoof_comments(n, ip)}


def table_text(instance, family: str = "ip") -> str:
    proc = nft(["list", "table", family, instance.nft_table])
    return proc.stdout if proc.returncode == 0 else ""


