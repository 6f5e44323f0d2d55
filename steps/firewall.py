"""The firewall stage: our bridge's traffic through the host's own firewall.

In nftables a packet must pass every base chain of a hook: an accept in our table is not
final, and a drop anywhere is. So when another table's forward chain drops what our bridge
sends or receives (Docker's FORWARD policy DROP, ufw's, firewalld's final reject), the
narrowest accept rules for the flows it drops go where that firewall's owner expects them:
Docker's DOCKER-USER chain when it exists, else the head of the dropping chain itself (nft
for native tables, iptables-nft or iptables-legacy for theirs). Every rule carries the
comment diy-fw:<instance mark>:<bridge>:<flow>; nothing we did not make is ever flushed,
replaced or moved. The rules are the bridge's, shared by its containers: the last one to go
takes them (as the nat table), and `network.repair` puts back what a firewall reload removed.

The config key firewall_compat says what to do: auto (add the rules), report (say what
drops, change nothing) or off.
"""
from __future__ import annotations

import sys
from typing import NamedTuple

from steps import Change, Step, StepFailed, absent, applied, faults, ipam, nothing, partial
from steps import netfilter as nf
from steps.nat import table_marker
from steps.state import instance_lock

NFT_RULES = {"out": 'iifname "{br}" oifname != "{br}" ip saddr {net} accept',
             "local": 'iifname "{br}" oifname "{br}" ip saddr {net} accept',
             "back": 'oifname "{br}" ip daddr {net} ct state established,related accept',
             "published": 'oifname "{br}" ip daddr {net} ct status dnat accept'}
IPTABLES_RULES = {"out": "-s {net} -i {br} ! -o {br}",
                  "local": "-s {net} -i {br} -o {br}",
                  "back": "-d {net} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED",
                  "published": "-d {net} -o {br} -m conntrack --ctstate DNAT"}
RESTORE = {"iptables-nft": ["iptables-nft-restore", "--noflush"],
           "iptables-legacy": ["iptables-legacy-restore", "--noflush", "--wait=10"]}
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
    unfixable: list[nf.Blocker]    # drops no accept of ours can get past (prerouting, bridge family)


def prefix(instance) -> str:
    return f"diy-fw:{table_marker(instance)}:"


def comment(instance, flow: str) -> str:
    return f"{prefix(instance)}{instance.bridge}:{flow}"


def place_for(blocker: nf.Blocker) -> Place | None:
    """Where the accepts for a blocker go, or None when it cannot be fixed with an accept."""
    t = blocker.table
    if blocker.hook != "forward" or t.family == "bridge":
        return None
    if t.backend != "nft" and "DOCKER-USER" in t.chains and jumps_first(t.chains[blocker.chain], "DOCKER-USER"):
        return Place(t.backend, t.family, t.name, "DOCKER-USER")  # Docker's place for users' rules
    return Place(t.backend, t.family, t.name, blocker.chain)


def jumps_first(chain: nf.Chain, target: str) -> bool:
    """Whether the chain's first rule is an unconditional jump to target (as Docker keeps it)."""
    first = next(iter(chain.rules), None)
    return first is not None and not first.matches and first.verdict == "jump" and first.target == target


def read_facts(instance) -> Facts:
    """What drops our bridge's traffic, the rules that would let it through, and ours present."""
    mine = prefix(instance)
    tables = nf.read_tables(instance.nft_table)
    found = nf.blockers(tables, instance.bridge, instance.network, skip=mine)
    want, unfixable = set(), []
    for b in found:
        place = place_for(b)
        if place is None:
            unfixable.append(b)
        else:
            want.add((place, b.flow))
    have = [Ours(Place(t.backend, t.family, t.name, c.name), r.comment.rsplit(":", 1)[1], r.handle, r.spec)
            for t in tables for c in t.chains.values() for r in c.rules if r.comment.startswith(mine)]
    return Facts(found, want, have, unfixable)


def warn_once(text: str) -> None:
    """A warning for people, as Docker prints one ("WARNING: ..."): once per process."""
    if text not in _warned:
        _warned.add(text)
        print(f"WARNING: {text}", file=sys.stderr)


def summary(blockers: list[nf.Blocker]) -> str:
    return "; ".join(str(b) for b in blockers)


class FirewallStep(Step):
    name = "firewall"

    @property
    def bridged(self) -> bool:
        return self.ctx.spec.get("network", "bridge") == "bridge"

    def check(self):
        """Applied when ours are exactly the accepts the dropping chains need. The rules are the
        bridge's: while another container holds a lease they count as absent for this one, so
        its undo leaves them to the others; the last one's undo removes them."""
        if not self.bridged:
            return nothing("no network")
        inst = self.ctx.instance
        facts = read_facts(inst)
        mode = inst.firewall_compat
        want = facts.want if mode == "auto" else set()
        have = {(o.place, o.flow) for o in facts.have}
        others = [n for n in ipam.load(inst) if n != self.ctx.names.container]
        if mode != "off" and (facts.unfixable or (mode == "report" and facts.blockers)):
            shown = facts.unfixable if mode == "auto" else facts.blockers
            warn_once(f"the host's firewall drops traffic of bridge {inst.bridge}: {summary(shown)}"
                      + ("" if mode == "auto" else " (firewall_compat: report; auto would add accepts)"))
        if want == have:
            detail = self.describe(facts, mode)
            return (nothing if others or not have else applied)(detail)
        changes = [Change(f"accept {f} in {place}", "-", comment(inst, f)) for place, f in sorted(want - have)]
        changes += [Change(f"accept {f} in {place}", comment(inst, f), "-") for place, f in sorted(have - want)]
        if others or not have:
            return absent(changes)
        return partial(changes)

    def describe(self, facts: Facts, mode: str) -> str:
        if mode == "off":
            return "firewall_compat: off"
        if not facts.blockers:
            return f"nothing in the host's firewall drops traffic of {self.ctx.instance.bridge}"
        if mode == "report":
            return f"report only: {summary(facts.blockers)}"
        where = sorted({str(o.place) for o in facts.have})
        return f"accepts for {self.ctx.instance.bridge} in {', '.join(where)}" if where else summary(facts.blockers)

    def apply(self):
        with instance_lock(self.ctx.instance):
            converge(self.ctx.instance, remove_all=False)

    def undo(self):
        with instance_lock(self.ctx.instance):
            if not [n for n in ipam.load(self.ctx.instance) if n != self.ctx.names.container]:
                converge(self.ctx.instance, remove_all=True)


def converge(instance, remove_all: bool) -> None:
    """Add the missing accepts and remove the ones not needed (all of ours with remove_all),
    one transaction per backend. Callers hold the instance lock."""
    facts = read_facts(instance)
    want = set() if remove_all or instance.firewall_compat != "auto" else facts.want
    have = {(o.place, o.flow) for o in facts.have}
    stale = [o for o in facts.have if (o.place, o.flow) not in want]
    missing = sorted(want - have)
    for backend in ("nft", "iptables-nft", "iptables-legacy"):
        adds = [(p, f) for p, f in missing if p.backend == backend]
        drops = [o for o in stale if o.place.backend == backend]
        if adds or drops:
            (nft_batch if backend == "nft" else iptables_batch)(instance, adds, drops, backend)
            faults.point(f"firewall.{'undo' if remove_all else 'apply'}.mid")


def nft_batch(instance, adds: list[tuple[Place, str]], drops: list[Ours], backend: str = "nft") -> None:
    lines = [f"delete rule {o.place.family} {o.place.table} {o.place.chain} handle {o.handle}" for o in drops]
    for place, flow in adds:
        rule = NFT_RULES[flow].format(br=instance.bridge, net=instance.subnet)
        where = f"{place.family} {place.table} {place.chain}"
        lines.append(f'insert rule {where} {rule} comment "{comment(instance, flow)}"')
    proc = nf.run(["nft", "-f", "-"], stdin="\n".join(lines) + "\n")
    if proc is None or proc.returncode != 0:
        why = "nft is not installed" if proc is None else (proc.stderr.strip().splitlines() or ["failed"])[0]
        raise StepFailed(f"cannot change the host's nft chains for bridge {instance.bridge}: {why}")


def iptables_batch(instance, adds: list[tuple[Place, str]], drops: list[Ours], backend: str) -> None:
    lines = ["*filter"] + [f"-D {o.place.chain} {restore_args(o.spec)}" for o in drops]
    for place, flow in adds:
        rule = IPTABLES_RULES[flow].format(br=instance.bridge, net=instance.subnet)
        lines.append(f"-I {place.chain} {rule} -m comment --comment {comment(instance, flow)} -j ACCEPT")
    proc = nf.run(RESTORE[backend], stdin="\n".join([*lines, "COMMIT"]) + "\n")
    if proc is None or proc.returncode != 0:
        why = f"{RESTORE[backend][0]} is not installed" if proc is None else \
            (proc.stderr.strip().splitlines() or ["failed"])[0]
        raise StepFailed(f"cannot change the host's {backend} chains for bridge {instance.bridge}: {why}")


def restore_args(args: tuple[str, ...]) -> str:
    """Arguments as iptables-restore reads them: double quotes around a word with a space."""
    return " ".join(f'"{a}"' if " " in a or not a else a for a in args)


def remove_rules(instance) -> None:
    """Every rule of ours in the host's chains goes (the last container, network.prune).
    Callers hold the instance lock."""
    converge(instance, remove_all=True)
