"""The nat stage: forwarding on, and the instance's own nftables table holding masquerade
for the subnet and DNAT for every published port of the instance's containers.

Each apply and undo changes only its container's rules - its member rule in the forward
chain, its DNATs in chain `published`, its anti-spoofing jump and chain in the bridge table -
in one transaction (one run of libnftables, steps/nftables.py). Every rule carries a
comment: rules are found by it and deleted by handle, and check compares the comments this
container's rules must have with those the tables hold. The base (tables, chains, the rules
every container shares) is rendered from templates/nftables.j2, with the containers in the
tables now, when a table is missing or one of its base rules is (the first container, or a
repair) - in that same transaction; the last container's undo deletes both tables.
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

from typing import NamedTuple

from steps import Change, Step, StepFailed, absent, applied, faults, ipam, nftables, nothing, partial
from steps import network as net
from steps.names import Names, sha256, veth_prefix
from steps.state import instance_lock
from steps.state import read_value as sysctl
from steps.state import write_value as set_sysctl

BASE_COMMENTS = {"diy:no-loopback-from-containers", "diy:jump:prerouting", "diy:jump:output", "diy:masquerade",
                 "diy:masquerade-local", "diy:masquerade-hairpin", "diy:forward:back", "diy:forward:published",
                 "diy:forward:out", "diy:forward:unpublished", "diy:antispoof-unknown-port", "diy:isolate"}
FAMILIES = ("ip", "bridge")  # one table name in each: nat and filtering in ip, anti-spoofing in bridge
ANTISPOOF_RULES = ("mac", "ipv4", "arp", "rest")  # the rules of a container's chain, as their comments end


class Rule(NamedTuple):
    chain: str
    handle: int
    comment: str


class Table(NamedTuple):
    family: str
    rules: list[Rule]  # the rules with a comment (all of ours carry one)
    chains: set[str]
    owner: str         # the owner mark ("" when none)

    @property
    def comments(self) -> set[str]:
        return {r.comment for r in self.rules} - {f"diy:owner:{self.owner}"}


def table_marker(instance) -> str:
    """Whose the table is (two instances could be given one table name): the comment of a
    counter rule, as nft's JSON does not carry table comments before 1.0.7."""
    return sha256(instance.state_root.encode()).hexdigest()[:12]


def read_table(table: str, family: str = "ip", chains: tuple[str, ...] = ()) -> Table | None:
    """Our table of that name in family as it is loaded (only these chains of it, when given:
    a chain that does not exist has no rules), or None when it does not exist."""
    items: list[dict] = []
    commands = [f"list chain {family} {table} {c}" for c in chains] or [f"list table {family} {table}"]
    for i, command in enumerate(commands):
        try:
            items += nftables.list_json(command)
        except nftables.NftError as e:
            if not e.missing:
                raise StepFailed(f"cannot read nft table {family} {table}: {e}") from None
            if i == 0:  # no table; or, with chains, no first chain: the whole tells which
                return read_table(table, family) if chains else None
    rules = [Rule(r["chain"], r["handle"], r["comment"]) for i in items if "rule" in i for r in [i["rule"]]
             if "comment" in r]
    owner = next((r.comment[len("diy:owner:"):] for r in rules if r.comment.startswith("diy:owner:")), "")
    return Table(family, rules, {i["chain"]["name"] for i in items if "chain" in i}, owner)


def live_table(table: str, family: str = "ip") -> tuple[set[str], str] | None:
    """(the rule comments, the owner mark) of table in family, or None when it does not exist."""
    live = read_table(table, family)
    return None if live is None else (live.comments, live.owner)


def live_comments(table: str, family: str = "ip") -> set[str] | None:
    live = read_table(table, family)
    return None if live is None else live.comments


def tables(instance, name: str | None = None) -> dict[str, Table]:
    """Our tables that exist, by family; with a container's name, of the bridge table only
    the chain holding the owner mark, every container's jump and the catch-all, and that
    container's own chain: all its steps need, and about a quarter of the whole's cost with
    50 containers (0.6 ms instead of 2.7; 0.7 ms for the ip table). A call of the library
    each; one `list ruleset` of a busy host costs more, and nft 1.0.6 cannot run two list
    commands in one call (its cache then holds only the last command's table). A foreign
    table of our name in either family is refused."""
    found = {}
    for family in FAMILIES:
        chains = ("prerouting", antispoof_chain(instance, name)) if family == "bridge" and name else ()
        live = read_table(instance.nft_table, family, chains)
        if live is None:
            continue
        if live.owner != table_marker(instance):
            raise StepFailed(f"cannot use nft table {family} {instance.nft_table}: it exists and is not this "
                             "instance's; set another `nft_table:` in the config (or DIY_DOCKER_NFT_TABLE)")
        found[family] = live
    return found


def comments_of(live: dict[str, Table]) -> set[str] | None:
    """The rule comments of our tables, both families together (None when neither exists)."""
    return set().union(*(t.comments for t in live.values())) if live else None


def ours(instance, name: str | None = None) -> set[str] | None:
    return comments_of(tables(instance, name))


def own_prefixes(name: str) -> tuple[str, ...]:
    return f"diy:member:{name}:", f"diy:port:{name}:", f"diy:antispoof:{name}:"


def run(text: str, what: str) -> None:
    rc, _, err = nftables.run(text)
    if rc != 0:
        raise StepFailed(f"cannot {what}: {nftables.NftError(text, err)}")


class NatRules:
    """One network's tables, as far as one container is concerned (its rules; the tables' base
    rules when missing)."""

    def __init__(self, inst, base, container: str, spec: dict):
        self.inst, self.base, self.container, self.spec = inst, base, container, spec
        self.names = Names(inst, container)

    def sysctls(self) -> dict[str, str]:
        return {"/proc/sys/net/ipv4/ip_forward": "1",
                f"/proc/sys/net/ipv4/conf/{self.inst.bridge}/route_localnet": "1"}

    def own(self, comments) -> set[str]:
        """This container's rules among comments: its member rule, its ports, its anti-spoofing rules."""
        mine = own_prefixes(self.container)
        return {c for c in comments or () if c.startswith(mine)}

    def check(self):
        """Applied when the table's base rules and exactly this container's rules (for its
        current address and ports) are loaded; the others' rules are theirs to check."""
        inst, name = self.inst, self.container
        leases = ipam.load(inst)
        live = ours(inst, name)
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
        leases = ipam.load(self.inst)
        for path, value in self.sysctls().items():
            if sysctl(path) != value:
                set_sysctl(path, value)
        faults.point("nat.apply.mid")
        inst, me = self.inst, self.container
        live = tables(inst, me)  # also refuses a foreign table of our name before anything is changed
        if len(live) < len(FAMILIES) or not BASE_COMMENTS <= (comments_of(live) or set()):
            self.render(live, leases)
        elif text := changes_for(inst, live, me, leases.get(me)):
            run(text, f"change nft tables {inst.nft_table} for {me}")

    def undo(self):
        inst, me = self.inst, self.container
        others = {k: v for k, v in ipam.load(inst).items() if k != me}
        faults.point("nat.undo.mid")
        if not others:
            drop_table(inst)
        elif text := changes_for(inst, tables(inst, me), me, None):
            run(text, f"remove {me}'s rules from nft tables {inst.nft_table}")

    def render(self, live: dict[str, Table], leases: dict) -> None:
        """Replace our tables whole, with the rules of the containers in them now (at their
        current leases) and this one: not every lease, as a container between its nat and veth
        undo still holds one and must not be put back (its undo check would then fail)."""
        from steps.templating import fill

        inst, me = self.inst, self.container
        present = in_table(comments_of(live))
        keep = {n: ip for n, ip in leases.items() if n in present or n == me}
        text = fill("nftables.j2", table=inst.nft_table, bridge=inst.bridge, subnet=str(inst.network),
                    marker=table_marker(inst), veth_prefix=veth_prefix(inst), others=other_bridges(inst, self.base))
        text += "".join(changes_for(inst, {}, n, ip) for n, ip in sorted(keep.items()))  # their rules, added
        run(text, f"load nft tables {inst.nft_table}")


def other_bridges(inst, base) -> str:
    """An nft set of the instance's other bridges (its default one, its user networks' by their
    prefix): a container's traffic to them is dropped - networks are isolated."""
    from steps.names import bridge_prefix

    names = [f'"{bridge_prefix(inst)}*"'] + ([f'"{base.bridge}"'] if base.bridge != inst.bridge else [])
    return "{ " + ", ".join(names) + " }"


class NatStep(Step):
    name = "nat"

    def parts(self, strict: bool = True) -> list[NatRules]:
        from steps.networks import attached

        inst, name = self.ctx.instance, self.ctx.names.container
        return [NatRules(v, inst, name, self.ctx.spec) for v in attached(inst, self.ctx.spec, strict)]

    def check(self):
        parts = self.parts(strict=False)
        if not parts:
            return nothing("no network")
        checks = [p.check() for p in parts]
        if all(c.applied for c in checks):
            return applied("; ".join(c.detail for c in checks))
        changes = [ch for c in checks for ch in c.changes]
        return (absent if all(c.absent for c in checks) else partial)(changes)

    def apply(self):
        with instance_lock(self.ctx.instance):
            net.check_ports_free(self.ctx.names, self.ctx.spec.get("publish") or [])  # now, under the lock
            for part in self.parts():
                part.apply()

    def undo(self):
        with instance_lock(self.ctx.instance):
            for part in reversed(self.parts(strict=False)):
                part.undo()


def changes_for(inst, live: dict[str, Table], name: str, ip: str | None) -> str:
    """The commands taking one container's rules from what live holds to what it needs at ip
    (None: to none), the others' untouched: stale rules deleted by handle, missing ones added.
    Its member rule and its anti-spoofing jump must come before their chains' catch-alls
    (`diy:forward:out`, `diy:antispoof-unknown-port`): they are inserted at the chains' heads,
    as what precedes them there is indifferent to order (accepts in forward; the owner's
    counter in prerouting). `insert ... position HANDLE` would make nft read every rule of
    the table first (~1.2 ms more with 50 containers; ~0.2 ms at the head)."""
    want = set() if ip is None else {c for c in wanted(inst, {name: ip}) if c.startswith(own_prefixes(name))}
    chain, t = antispoof_chain(inst, name), inst.nft_table
    cmds, have = [], set()
    for family, table in live.items():
        for r in table.rules:
            if not r.comment.startswith(own_prefixes(name)):
                continue
            have.add(r.comment)
            if r.comment not in want and (family, r.chain) != ("bridge", chain):  # that chain is redone whole
                cmds.append(f"delete rule {family} {t} {r.chain} handle {r.handle}")
    in_chain = [r.comment for r in live["bridge"].rules if r.chain == chain] if "bridge" in live else []
    if ip is None:
        if "bridge" in live and chain in live["bridge"].chains:
            cmds.append(f"delete chain bridge {t} {chain}")  # its rules with it
        return "".join(f"{c}\n" for c in cmds)
    if f"diy:member:{name}:{ip}" not in have:  # at the head: before the catch-alls
        cmds.append(f"insert rule ip {t} forward {member_rule(inst, name, ip)}")
    cmds += [f"add rule ip {t} published {port_rule(p)}" for p in net.published(inst, {name: ip})
             if p["comment"] not in have]
    if in_chain != [f"diy:antispoof:{name}:{ip}:{rule}" for rule in ANTISPOOF_RULES]:  # in that order
        cmds += [f"add chain bridge {t} {chain}", f"flush chain bridge {t} {chain}"]
        cmds += [f"add rule bridge {t} {chain} {r}" for r in antispoof_rules(inst, name, ip)]
    if f"diy:antispoof:{name}:{ip}" not in have:
        cmds.append(f"insert rule bridge {t} prerouting {antispoof_jump(inst, name, ip)}")
    return "".join(f"{c}\n" for c in cmds)


# --- a container's rules (the template puts them in a table rendered whole) ---------------------

def member_rule(inst, name: str, ip: str) -> str:
    return f'iifname "{inst.bridge}" ip saddr {ip} accept comment "diy:member:{name}:{ip}"'


def port_rule(p: dict) -> str:
    daddr = "" if p["host_ip"] == "0.0.0.0" else f"ip daddr {p['host_ip']} "
    return (f"{daddr}{p['proto']} dport {p['host_port']} dnat to {p['ip']}:{p['container_port']} "
            f'comment "{p["comment"]}"')


def antispoof_chain(inst, name: str) -> str:
    return f"from_{Names(inst, name).host_veth}"


def antispoof_jump(inst, name: str, ip: str) -> str:
    veth = Names(inst, name).host_veth
    return f'iifname "{veth}" jump from_{veth} comment "diy:antispoof:{name}:{ip}"'


def antispoof_rules(inst, name: str, ip: str) -> list[str]:
    """A container's chain: frames from its MAC only; IPv4 from its lease and ARP for it, as
    its own; nothing else. `ether type` is spelled out: it reads the frame itself, so a
    VLAN-tagged frame is not taken for the IPv4 inside it (nft's implicit dependency would
    test the skb's protocol, the inner one)."""
    mac, c = net.mac_of(ip), f"diy:antispoof:{name}:{ip}"
    return [f'ether saddr != {mac} drop comment "{c}:mac"',
            f'ether type ip ip saddr {ip} accept comment "{c}:ipv4"',
            f'ether type arp arp saddr ether {mac} arp saddr ip {ip} accept comment "{c}:arp"',
            f'drop comment "{c}:rest"']


def drop_table(instance) -> None:
    """Delete our tables (and only ours), both families in one transaction; a table already
    gone is fine (each is made, if missing, before it is deleted). Callers hold the instance lock."""
    if not tables(instance):
        return
    run("".join(f"table {f} {instance.nft_table} {{}}\ndelete table {f} {instance.nft_table}\n" for f in FAMILIES),
        f"delete nft tables {instance.nft_table}")


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
    rc, out, _ = nftables.run(f"list table {family} {instance.nft_table}")
    return out if rc == 0 else ""
