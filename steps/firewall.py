"""The firewall stage: our bridge's traffic through the host's own firewall.

In nftables a packet must pass every base chain of a hook: an accept in our table is not
final, and a drop anywhere is. So when another table's forward chain drops what our bridge
sends or receives (Docker's FORWARD policy DROP, ufw's, firewalld's final reject), the
narrowest accept rules for the flows it drops go where that firewall's owner expects them:
Docker's DOCKER-USER chain when it exists, else the head of the dropping chain itself (nft
for native tables, iptables-nft or iptables-legacy for theirs). Every rule carries the
comment diy-fw:<instance mark>:<bridge>:<flow>; nothing we did not make is ever flushed,
replaced or moved. Only "sure" drops get accepts (a policy, a blanket drop): a drop aimed at
something we cannot tell (a port, an address outside) is the owner's, reported, kept.
The rules are the bridge's, shared by its containers: the last one to go takes them (as the
nat table), and `network.repair` puts back what a firewall reload removed.

The config key firewall_compat says what to do: auto (add the rules), report (say what
drops, change nothing) or off (neither look nor touch).
"""
from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, NamedTuple

from steps import Change, Step, StepFailed, absent, applied, faults, ipam, nothing, partial
from steps.state import instance_lock

if TYPE_CHECKING:
    from steps import netfilter as nf

FLOWS = ("out", "reply", "local", "back", "published")
GUARDS = ("guard-docker", "guard-br")  # before our out accept in DOCKER-USER: Docker's bridges stay Docker's
IPTABLES_RULES = {"out": "-s {net} -i {br} ! -o {br}",
                  "reply": "-s {net} -i {br} -m conntrack --ctstate RELATED,ESTABLISHED",
                  "local": "-s {net} -i {br} -o {br}",
                  "back": "-d {net} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED",
                  "published": "-d {net} -o {br} -m conntrack --ctstate DNAT",
                  "guard-docker": "-i {br} -o docker+",
                  "guard-br": "-i {br} -o br-+"}
RESTORE = {"iptables-nft": ["iptables-nft-restore", "--noflush"],
           "iptables-legacy": ["iptables-legacy-restore", "--noflush", "--wait=10"]}
IPTABLES_CHAIN = re.compile(r"[A-Za-z0-9_.+-]{1,28}")
_warned: set[str] = set()


class Place(NamedTuple):
    """Where a rule of ours goes: a chain of one table of one backend."""

    backend: str
    family: str
    table: str
    chain: str

    def __str__(self) -> str:
        return f"{'nft ' + self.family if self.backend == 'nft' else self.backend} {self.table} {self.chain}"


class Ours(NamedTuple):
    place: Place
    flow: str
    handle: int
    spec: tuple[str, ...]


class Facts(NamedTuple):
    blockers: list[nf.Blocker]
    want: set[tuple[Place, str]]   # (where, flow) of the rules we need
    have: list[Ours]               # the rules of ours found, anywhere
    unfixable: list[str]           # sure drops no accept of ours can get past, and why
    unread: list[str]              # what of the firewall could not be read

    def warnings(self, mode: str) -> list[str]:
        """What a user must hear about: sure drops we leave in place, and what we could not read."""
        left = self.unfixable if mode == "auto" else [str(b) for b in self.blockers if b.sure]
        return left + [f"cannot read {u}" for u in self.unread]


def prefix(instance) -> str:
    """What our accepts for this network's bridge start with (each network has its own)."""
    from steps.nat import table_marker

    return f"diy-fw:{table_marker(instance)}:{instance.bridge}:"


def comment(instance, flow: str) -> str:
    return f"{prefix(instance)}{flow}"


def place_for(blocker: nf.Blocker) -> tuple[Place | None, str]:
    """Where the accepts for a blocker go, or (None, why not)."""
    t = blocker.table
    if blocker.hook != "forward" or t.family == "bridge":
        return None, f"{blocker} (an accept on this hook cannot be made narrow)"
    if t.unwritable:
        return None, f"{blocker} ({t.unwritable})"
    if t.backend != "nft" and "DOCKER-USER" in t.chains and jumps_first(t.chains[blocker.chain], "DOCKER-USER"):
        return Place(t.backend, t.family, t.name, "DOCKER-USER"), ""  # Docker's place for users' rules
    if t.backend != "nft" and not IPTABLES_CHAIN.fullmatch(blocker.chain):
        return None, f"{blocker} (a chain name iptables-restore cannot take)"
    return Place(t.backend, t.family, t.name, blocker.chain), ""


def jumps_first(chain: nf.Chain, target: str) -> bool:
    """Whether the chain's first rule is an unconditional jump to target (as Docker keeps it)."""
    first = next(iter(chain.rules), None)
    return first is not None and not first.matches and first.verdict == "jump" and first.target == target


def read_facts(instance) -> Facts:
    """What drops our bridge's traffic, the rules that would let it through, and ours present."""
    mine = prefix(instance)
    from steps import netfilter as nf  # (imported when the firewall is looked at, not for --network none)

    firewall = nf.read_firewall(instance.nft_table)
    found = nf.blockers(firewall.tables, instance.bridge, instance.network, skip=mine)
    want, unfixable = set(), []
    for b in (b for b in found if b.sure):
        place, why = place_for(b)
        if place is None:
            unfixable.append(why)
            continue
        want.add((place, b.flow))
        if b.flow == "out" and place.chain == "DOCKER-USER":
            want |= {(place, g) for g in GUARDS}
    have = [Ours(Place(t.backend, t.family, t.name, c.name), r.comment.rsplit(":", 1)[1], r.handle, r.spec)
            for t in firewall.tables for c in t.chains.values() for r in c.rules if r.comment.startswith(mine)]
    return Facts(found, want, have, unfixable, firewall.unread)


def warn_once(text: str) -> None:
    """A warning for people, as Docker prints one ("WARNING: ..."): once per process."""
    if text not in _warned:
        _warned.add(text)
        print(f"WARNING: {text}", file=sys.stderr)


class BridgeAccepts:
    """One network's accepts in the host's firewall, as far as one container is concerned."""

    def __init__(self, inst, container: str):
        self.inst, self.container = inst, container

    def check(self):
        """Applied when ours are exactly the accepts the dropping chains need. The rules are the
        bridge's: while another container holds a lease they count as absent for this one, so
        its undo leaves them to the others; the last one's undo removes them."""
        inst = self.inst
        facts = read_facts(inst)
        want = facts.want if inst.firewall_compat == "auto" else set()
        have = {(o.place, o.flow) for o in facts.have}
        others = [n for n in ipam.load(inst) if n != self.container]
        if warnings := facts.warnings(inst.firewall_compat):
            warn_once(f"the host's firewall drops traffic of bridge {inst.bridge}: {'; '.join(warnings)}"
                      + (" (firewall_compat: report)" if inst.firewall_compat == "report" else ""))
        if want == have:
            detail = self.describe(facts)
            return (nothing if others or not have else applied)(detail)
        changes = [Change(f"rule {f} in {place}", "-", comment(inst, f)) for place, f in sorted(want - have)]
        changes += [Change(f"rule {f} in {place}", comment(inst, f), "-") for place, f in sorted(have - want)]
        if others or not have:
            return absent(changes)
        return partial(changes)

    def describe(self, facts: Facts) -> str:
        bridge, mode = self.inst.bridge, self.inst.firewall_compat
        if not facts.blockers:
            return f"nothing in the host's firewall drops traffic of {bridge}"
        if mode == "report":
            return f"report only: {'; '.join(str(b) for b in facts.blockers)}"
        where = sorted({str(o.place) for o in facts.have})
        ours = f"accepts for {bridge} in {', '.join(where)}" if where else f"no accepts needed for {bridge}"
        soft = [str(b) for b in facts.blockers if not b.sure]
        return ours + (f"; left to the firewall's owner: {'; '.join(soft)}" if soft else "")

    def undo(self):
        if not [n for n in ipam.load(self.inst) if n != self.container]:
            converge(self.inst, remove_all=True)


class FirewallStep(Step):
    name = "firewall"

    def parts(self, strict: bool = True) -> list[BridgeAccepts]:
        from steps.networks import attached

        return [BridgeAccepts(v, self.ctx.names.container) for v in attached(self.ctx.instance, self.ctx.spec, strict)]

    def check(self):
        inst = self.ctx.instance
        parts = self.parts(strict=False)
        if not parts or inst.firewall_compat == "off":
            return nothing("no network" if not parts else "firewall_compat: off")
        checks = [p.check() for p in parts]
        if len(checks) == 1:
            return checks[0]
        changes = [ch for c in checks for ch in c.changes]
        if not changes:
            return (applied if any(c.state == "applied" for c in checks) else nothing)(
                "; ".join(c.detail for c in checks))
        return (absent if all(c.absent for c in checks) else partial)(changes)

    def apply(self):
        with instance_lock(self.ctx.instance):
            for part in self.parts():
                converge(part.inst, remove_all=False)

    def undo(self):
        with instance_lock(self.ctx.instance):
            for part in self.parts(strict=False):
                part.undo()


def converge(instance, remove_all: bool) -> None:
    """Add the missing accepts and remove the ones not needed (all of ours with remove_all),
    one transaction per backend. A place that misses its out accept or a guard gets all three
    again, guards first. Callers hold the instance lock."""
    facts = read_facts(instance)
    want = set() if remove_all or instance.firewall_compat != "auto" else facts.want
    have = {(o.place, o.flow) for o in facts.have}
    redo = {p for p, f in want - have if f in ("out", *GUARDS)}
    stale = [o for o in facts.have
             if (o.place, o.flow) not in want or (o.place in redo and o.flow in ("out", *GUARDS))]
    kept = have - {(o.place, o.flow) for o in stale}
    missing = sorted(want - kept, key=lambda pf: (pf[0], pf[1] in GUARDS, pf[1]))  # guards last: on top
    for backend in ("nft", "iptables-nft", "iptables-legacy"):
        adds = [(p, f) for p, f in missing if p.backend == backend]
        drops = [o for o in stale if o.place.backend == backend]
        if adds or drops:
            (nft_batch if backend == "nft" else iptables_batch)(instance, adds, drops, backend)
            faults.point(f"firewall.{'undo' if remove_all else 'apply'}.mid")


def nft_expr(flow: str, bridge: str, net) -> list[dict]:
    """Our accept for a flow, in nft's JSON (names are values there, never parsed as syntax)."""
    def match(left: dict, op: str, right) -> dict:
        return {"match": {"op": op, "left": left, "right": right}}
    iif, oif = {"meta": {"key": "iifname"}}, {"meta": {"key": "oifname"}}
    subnet = {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}
    saddr = match({"payload": {"protocol": "ip", "field": "saddr"}}, "==", subnet)
    daddr = match({"payload": {"protocol": "ip", "field": "daddr"}}, "==", subnet)
    replies = match({"ct": {"key": "state"}}, "in", ["established", "related"])
    rules = {"out": [match(iif, "==", bridge), match(oif, "!=", bridge), saddr],
             "reply": [match(iif, "==", bridge), saddr, replies],
             "local": [match(iif, "==", bridge), match(oif, "==", bridge), saddr],
             "back": [match(oif, "==", bridge), daddr, replies],
             "published": [match(oif, "==", bridge), daddr, match({"ct": {"key": "status"}}, "in", "dnat")]}
    return [*rules[flow], {"accept": None}]


def nft_batch(instance, adds: list[tuple[Place, str]], drops: list[Ours], backend: str = "nft") -> None:
    import json

    from steps import netfilter as nf
    from steps import nftables

    def where(p: Place) -> dict:
        return {"family": p.family, "table": p.table, "chain": p.chain}

    # (a handle read a moment ago: a firewall reloaded in between could have given it to another
    # rule; nft has no delete by comment, and the window is the few ms since read_facts)
    cmds = [{"delete": {"rule": {**where(o.place), "handle": o.handle}}} for o in drops]
    cmds += [{"insert": {"rule": {**where(p), "expr": nft_expr(f, instance.bridge, instance.network),
                                  "comment": comment(instance, f)}}} for p, f in adds]
    proc = nftables.completed(json.dumps({"nftables": cmds}), json_in=True)
    if proc is None or proc.returncode != 0:
        raise StepFailed(f"cannot change the host's nft chains for bridge {instance.bridge}: "
                         f"{nf.first_line(proc, 'nft')} (firewall_compat: report runs without our accepts)")


def iptables_batch(instance, adds: list[tuple[Place, str]], drops: list[Ours], backend: str) -> None:
    from steps import netfilter as nf

    lines = ["*filter"] + [f"-D {o.place.chain} {restore_args(o.spec)}" for o in drops]
    for place, flow in adds:
        rule = IPTABLES_RULES[flow].format(br=instance.bridge, net=instance.network)
        verdict = "RETURN" if flow in GUARDS else "ACCEPT"
        lines.append(f"-I {place.chain} {rule} -m comment --comment {comment(instance, flow)} -j {verdict}")
    proc = nf.run(RESTORE[backend], stdin="\n".join([*lines, "COMMIT"]) + "\n")
    if proc is None or proc.returncode != 0:
        raise StepFailed(f"cannot change the host's {backend} chains for bridge {instance.bridge}: "
                         f"{nf.first_line(proc, RESTORE[backend][0])} (firewall_compat: report runs without them)")


def restore_args(args: tuple[str, ...]) -> str:
    """Arguments as iptables-restore reads them: double quotes around a word with a space."""
    return " ".join(f'"{a}"' if " " in a or not a else a for a in args)


def remove_rules(instance) -> None:
    """Every rule of ours in the host's chains goes (the last container, network.prune); with
    firewall_compat: off nothing is looked at. Callers hold the instance lock."""
    if instance.firewall_compat != "off":
        converge(instance, remove_all=True)
