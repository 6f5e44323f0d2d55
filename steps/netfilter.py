"""What the host's firewall does to our bridge's traffic: facts for the firewall stage.

Every base chain on the forward, prerouting and postrouting hooks is read - from nftables
(every table but our own, through `nft -j list ruleset`) and from iptables (the nf_tables
backend's `ip filter` table and, when its tables are loaded, the legacy one, through their
`-save` text, which is exact where nft's JSON shows iptables' matches only as "xt") - and
walked, jumps and gotos included, for four flows of our bridge's traffic. Each match is
answered yes, no or "cannot tell" (a port, a mark, an xt match): a rule that may match is a
doubt, never taken for a verdict. What drops a flow, certainly or maybe, is a Blocker.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shlex
import subprocess
from typing import NamedTuple

YES, NO, MAYBE = True, False, None
HOOKS = ("forward", "prerouting", "postrouting")
IPTABLES_BASE = {"FORWARD": "forward", "PREROUTING": "prerouting", "POSTROUTING": "postrouting"}
NON_TERMINAL_TARGETS = {"LOG", "NFLOG", "MARK", "CONNMARK", "TRACE", "AUDIT", "CLASSIFY", "DSCP", "TOS",
                        "TCPMSS", "CT", "CONNSECMARK", "SECMARK", "NOTRACK", "TEE"}


class Flow(NamedTuple):
    """One kind of our bridge's traffic as a forward hook sees it. An interface of None is
    "some other interface"; an address of None is "any address"."""

    name: str
    iif: str | None
    oif: str | None
    saddr: ipaddress.IPv4Network | None
    daddr: ipaddress.IPv4Network | None
    state: str        # "new" or "established"
    dnat: bool | None  # None: cannot tell


FLOW_TEXT = {"out": "containers to other hosts", "local": "container to container",
             "back": "replies into the bridge", "published": "published ports"}


def flows(bridge: str, subnet: ipaddress.IPv4Network) -> list[Flow]:
    return [Flow("out", bridge, None, subnet, None, "new", False),
            Flow("local", bridge, bridge, subnet, subnet, "new", False),
            Flow("back", None, bridge, None, subnet, "established", None),
            Flow("published", None, bridge, None, subnet, "new", True)]


class Match(NamedTuple):
    """One condition of a rule: key is iif, oif, saddr, daddr, state, status, nfproto or
    other (which cannot be told); values are what it compares with."""

    key: str
    negate: bool
    values: tuple


class Rule(NamedTuple):
    matches: tuple[Match, ...]
    verdict: str      # accept, drop, jump, goto, return, continue, unknown
    target: str       # the chain of a jump or goto
    text: str         # for people
    comment: str
    handle: int       # nft's handle (0 for iptables)
    spec: tuple[str, ...]  # iptables: the rule's arguments after "-A CHAIN"


class Chain(NamedTuple):
    name: str
    hook: str        # "" for a regular chain
    policy: str      # accept or drop ("" for a regular chain)
    rules: tuple[Rule, ...]


class Table(NamedTuple):
    backend: str     # nft, iptables-nft, iptables-legacy
    family: str
    name: str
    chains: dict[str, Chain]

    @property
    def where(self) -> str:
        return f"nft {self.family} {self.name}" if self.backend == "nft" else f"{self.backend} {self.name}"


class Blocker(NamedTuple):
    """A base chain that drops (certain) or may drop a flow, and why."""

    table: Table
    chain: str
    hook: str
    flow: str
    why: str
    certain: bool

    def __str__(self) -> str:
        how = "drops" if self.certain else "may drop"
        return f"{self.table.where} chain {self.chain} ({self.hook}) {how} {FLOW_TEXT[self.flow]}: {self.why}"


# --- answering one match for one flow ---------------------------------------------------

def iface_matches(pattern: str, name: str) -> bool:
    """nft's "br*" and iptables' "br+" are prefixes."""
    if pattern.endswith(("*", "+")):
        return name.startswith(pattern[:-1])
    return pattern == name


def answer_iface(values: tuple, name: str | None, bridge: str) -> bool | None:
    if name is not None:
        return any(iface_matches(v, name) for v in values)
    # some other interface than the bridge: only a pattern that names the bridge alone says no
    return NO if values and all(v == bridge for v in values) else MAYBE


def answer_addr(values: tuple, net: ipaddress.IPv4Network | None) -> bool | None:
    if net is None:
        return MAYBE
    if any(net.subnet_of(v) for v in values):
        return YES
    if all(not net.overlaps(v) for v in values):
        return NO
    return MAYBE


def answer(m: Match, flow: Flow, bridge: str) -> bool | None:
    if m.key in ("iif", "oif"):
        got = answer_iface(m.values, flow.iif if m.key == "iif" else flow.oif, bridge)
    elif m.key in ("saddr", "daddr"):
        got = answer_addr(m.values, flow.saddr if m.key == "saddr" else flow.daddr)
    elif m.key == "state":
        got = flow.state in m.values
    elif m.key == "status":
        got = MAYBE if flow.dnat is None else (flow.dnat == ("dnat" in m.values))
    elif m.key == "nfproto":
        got = "ipv4" in m.values
    else:
        return MAYBE
    return got if got is MAYBE or not m.negate else not got


def rule_answer(rule: Rule, flow: Flow, bridge: str) -> bool | None:
    answers = [answer(m, flow, bridge) for m in rule.matches]
    if NO in answers:
        return NO
    return MAYBE if MAYBE in answers else YES


# --- walking chains -------------------------------------------------------------------

class Walk(NamedTuple):
    verdict: str        # accept, drop, or "" (fell through: the policy, or back to the caller)
    why: str
    doubts: tuple[str, ...]  # rules passed that may drop the flow
    hopes: bool = False      # a rule passed may accept it


def walk(table: Table, chain: str, flow: Flow, bridge: str, skip: str, depth: int = 0) -> Walk:
    """The verdict of a chain for a flow; rules whose comment starts with skip (ours) are left out."""
    doubts: list[str] = []
    hopes = False
    if depth > 16 or chain not in table.chains:
        return Walk("", "", (f"chain {chain} cannot be followed",))
    for rule in table.chains[chain].rules:
        if skip and rule.comment.startswith(skip):
            continue
        got = rule_answer(rule, flow, bridge)
        if got is NO or rule.verdict == "continue":
            continue
        if rule.verdict in ("jump", "goto"):
            inner = walk(table, rule.target, flow, bridge, skip, depth + 1)
            hopes |= inner.hopes or (inner.verdict == "accept" and got is MAYBE)
            if got is YES and inner.verdict:
                return Walk(inner.verdict, inner.why, (*doubts, *inner.doubts), hopes)
            if inner.verdict == "drop" or inner.doubts:
                doubts.extend(inner.doubts or (f"{chain}: {rule.text} -> {inner.why}",))
            if got is YES and rule.verdict == "goto":
                return Walk("", "", tuple(doubts), hopes)
            continue
        if got is MAYBE or rule.verdict == "unknown":
            if rule.verdict in ("drop", "unknown"):
                doubts.append(f"{chain}: {rule.text}")
            hopes |= rule.verdict in ("accept", "unknown")
            continue
        if rule.verdict == "return":
            return Walk("", "", tuple(doubts), hopes)
        return Walk(rule.verdict, f"{chain}: {rule.text}", tuple(doubts), hopes)
    return Walk("", "", tuple(doubts), hopes)


def blockers(tables: list[Table], bridge: str, subnet: ipaddress.IPv4Network, skip: str) -> list[Blocker]:
    """Every base chain that drops, or may drop, one of our flows."""
    found = []
    for table in tables:
        for chain in table.chains.values():
            if chain.hook not in HOOKS:
                continue
            for flow in flows(bridge, subnet):
                if chain.hook == "prerouting" and flow.oif == bridge and flow.iif is None:
                    flow = flow._replace(daddr=None, oif=None)  # before DNAT and routing
                w = walk(table, chain.name, flow, bridge, skip)
                if w.verdict == "drop":
                    found.append(Blocker(table, chain.name, chain.hook, flow.name, w.why, not w.hopes))
                elif not w.verdict and chain.policy == "drop":
                    found.append(Blocker(table, chain.name, chain.hook, flow.name, "policy drop", not w.hopes))
                elif w.doubts and w.verdict != "accept":
                    found.append(Blocker(table, chain.name, chain.hook, flow.name, w.doubts[0], False))
    return found


# --- nftables ---------------------------------------------------------------------------

NFT_KEYS = {("meta", "iifname"): "iif", ("meta", "iif"): "iif", ("meta", "oifname"): "oif",
            ("meta", "oif"): "oif", ("payload", "saddr"): "saddr", ("payload", "daddr"): "daddr",
            ("ct", "state"): "state", ("ct", "status"): "status", ("meta", "nfproto"): "nfproto"}
STATEMENTS = {"counter", "log", "limit", "meta", "mangle", "quota", "notrack", "set", "ct count"}


def nft_values(right, key: str) -> tuple | None:
    """The values of a match's right side, or None when they cannot be read."""
    if isinstance(right, dict) and "set" in right:
        right = right["set"]
    items = right if isinstance(right, list) else [right]
    out = []
    for item in items:
        if key in ("saddr", "daddr"):
            net = nft_network(item)
            if net is None:
                return None
            out.append(net)
        elif isinstance(item, str):
            out.append(item)
        else:
            return None
    return tuple(out)


def nft_network(item) -> ipaddress.IPv4Network | None:
    try:
        if isinstance(item, str):
            return ipaddress.IPv4Network(item)
        if isinstance(item, dict) and "prefix" in item:
            return ipaddress.IPv4Network(f"{item['prefix']['addr']}/{item['prefix']['len']}", strict=False)
        if isinstance(item, dict) and "range" in item:
            first, last = (ipaddress.IPv4Address(a) for a in item["range"])
            nets = list(ipaddress.summarize_address_range(first, last))
            return nets[0] if len(nets) == 1 else None
    except (ValueError, KeyError, TypeError):
        return None
    return None


def nft_match(expr: dict) -> Match:
    left, op, right = expr.get("left"), expr.get("op", "=="), expr.get("right")
    key = "other"
    if isinstance(left, dict) and len(left) == 1:
        kind, body = next(iter(left.items()))
        field = body.get("key") or (body.get("field") if body.get("protocol") == "ip" else None) \
            if isinstance(body, dict) else None
        key = NFT_KEYS.get((kind, field), "other")
    values = nft_values(right, key) if key != "other" else None
    if values is None or op not in ("==", "!=", "in"):
        return Match("other", False, (json.dumps(expr, sort_keys=True),))
    return Match(key, op == "!=", values)


def nft_rule(item: dict) -> Rule:
    matches, verdict, target = [], "", ""
    for expr in item.get("expr", []):
        (kind, body), = expr.items()
        if kind == "match":
            matches.append(nft_match(body))
        elif kind in ("accept", "drop", "return", "continue"):
            verdict = kind
        elif kind == "reject":
            verdict = "drop"
        elif kind in ("jump", "goto"):
            verdict, target = kind, body.get("target", "")
        elif kind not in STATEMENTS:
            matches.append(Match("other", False, (kind,)))
            verdict = verdict or ("unknown" if kind in ("xt", "queue") else "")
    text = " ".join(describe(m) for m in matches) + f" {verdict or 'continue'}" + (f" {target}" if target else "")
    return Rule(tuple(matches), verdict or "continue", target, text.strip(), item.get("comment", ""),
                int(item.get("handle", 0)), ())


def describe(m: Match) -> str:
    names = {"iif": "iifname", "oif": "oifname", "saddr": "ip saddr", "daddr": "ip daddr", "state": "ct state",
             "status": "ct status", "nfproto": "meta nfproto", "other": "(a match)"}
    values = ",".join(str(v) for v in m.values) if m.key != "other" else ""
    return f"{names[m.key]}{' !=' if m.negate else ''} {values}".strip()


def nft_tables(ruleset: list[dict], skip_tables: set[tuple[str, str]]) -> list[Table]:
    """The ip, inet and bridge tables of a ruleset (nft -j list ruleset), but skip_tables."""
    tables: dict[tuple[str, str], Table] = {}
    rules: dict[tuple[str, str, str], list[Rule]] = {}
    for item in ruleset:
        if "chain" in item:
            c = item["chain"]
            key = (c["family"], c["table"])
            if c["family"] not in ("ip", "inet", "bridge") or key in skip_tables:
                continue
            tables.setdefault(key, Table("nft", c["family"], c["table"], {}))
            tables[key].chains[c["name"]] = Chain(c["name"], c.get("hook", ""), c.get("policy", "accept"), ())
        elif "rule" in item:
            r = item["rule"]
            rules.setdefault((r["family"], r["table"], r["chain"]), []).append(nft_rule(r))
    for (family, table, chain), found in rules.items():
        if (family, table) in tables and chain in tables[(family, table)].chains:
            tables[(family, table)].chains[chain] = tables[(family, table)].chains[chain]._replace(rules=tuple(found))
    for t in tables.values():  # bridge family chains see our container's frames only on the forward hook
        if t.family == "bridge":
            for name, c in list(t.chains.items()):
                if c.hook != "forward":
                    t.chains[name] = c._replace(hook="")
    return list(tables.values())


# --- iptables -----------------------------------------------------------------------------

def options(args: list[str]) -> list[tuple[bool, str, list[str]]]:
    """(negated, option, its values) for each option of an iptables-save rule."""
    out: list[tuple[bool, str, list[str]]] = []
    negate = False
    for word in args:
        if word == "!":
            negate = True
        elif word.startswith("-") and not word[1:].isdigit():
            out.append((negate, word, []))
            negate = False
        elif out:
            out[-1][2].append(word)
    return out


def iptables_rule(args: list[str]) -> Rule:
    """A rule from its iptables-save arguments (after "-A CHAIN")."""
    matches: list[Match] = []
    verdict, target, comment, module = "continue", "", "", ""
    targeted = False
    for negate, option, values in options(args):
        value = values[0] if values else ""
        if targeted:
            continue  # a target's own options (--reject-with, --log-prefix ...)
        if option in ("-i", "-o"):
            matches.append(Match("iif" if option == "-i" else "oif", negate, (value,)))
        elif option in ("-s", "-d"):
            matches.append(iptables_address(option, negate, value))
        elif option == "-p":
            if value != "all":
                matches.append(Match("other", negate, (f"-p {value}",)))
        elif option == "-m":
            module = value
        elif option in ("--ctstate", "--state") and module in ("conntrack", "state"):
            matches.extend(iptables_states(negate, value))
        elif option == "--ctstatus" and module == "conntrack":
            matches.append(Match("status", negate, tuple(value.lower().split(","))))
        elif option == "--comment" and module == "comment":
            comment = value
        elif option in ("-j", "-g"):
            verdict, target = target_verdict(option, value)
            targeted = True
        elif module != "comment":
            matches.append(Match("other", negate, (f"{option} {' '.join(values)}".strip(),)))
    text = " ".join(shlex.quote(a) for a in args)
    return Rule(tuple(matches), verdict, target, text, comment, 0, tuple(args))


def iptables_address(option: str, negate: bool, value: str) -> Match:
    try:
        net = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        return Match("other", negate, (f"{option} {value}",))
    return Match("saddr" if option == "-s" else "daddr", negate, (net,))


def iptables_states(negate: bool, value: str) -> list[Match]:
    """conntrack's --ctstate also takes DNAT and SNAT, which are nft's ct status."""
    states = {s.lower() for s in value.split(",")}
    status = tuple(sorted(states & {"dnat", "snat"}))
    rest = tuple(sorted(states - {"dnat", "snat"}))
    if status and rest:  # either one: a match of its own that cannot be told
        return [Match("other", negate, (f"--ctstate {value}",))]
    return [Match("status", negate, status)] if status else [Match("state", negate, rest)]


def target_verdict(flag: str, target: str) -> tuple[str, str]:
    if target in ("ACCEPT", "DROP", "RETURN"):
        return target.lower(), ""
    if target == "REJECT":
        return "drop", ""
    if target in NON_TERMINAL_TARGETS:
        return "continue", ""
    return ("jump" if flag == "-j" else "goto"), target  # an extension target (NFQUEUE) when no such chain


def iptables_table(text: str, backend: str, table: str = "filter") -> Table | None:
    """The table of an iptables-save text (None when absent)."""
    chains: dict[str, Chain] = {}
    rules: dict[str, list[Rule]] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith("*"):
            inside = line[1:].strip() == table
        elif not inside or line.startswith("#"):
            continue
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            hook = IPTABLES_BASE.get(name, "")
            chains[name] = Chain(name, hook, policy.lower() if hook else "", ())
        elif line.startswith("-A "):
            words = shlex.split(line)
            rules.setdefault(words[1], []).append(iptables_rule(words[2:]))
    if not chains:
        return None
    for name, found in rules.items():
        if name in chains:
            known = [r if r.verdict not in ("jump", "goto") or r.target in chains else r._replace(verdict="unknown")
                     for r in found]
            chains[name] = chains[name]._replace(rules=tuple(known))
    return Table(backend, "ip", table, chains)


# --- reading the host ------------------------------------------------------------------------

def run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess | None:
    """None when the program is not installed."""
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return None


def nft_ruleset() -> list[dict]:
    proc = run(["nft", "-j", "list", "ruleset"])
    if proc is None or proc.returncode != 0:
        return []
    return json.loads(proc.stdout or "{}").get("nftables", [])


def legacy_loaded() -> bool:
    """Whether the legacy iptables filter table exists in this network namespace (reading the
    tables would otherwise load them)."""
    try:
        with open("/proc/net/ip_tables_names") as f:
            return "filter" in f.read().split()
    except OSError:
        return False


def iptables_nft_manages(ruleset: list[dict]) -> bool:
    """Whether nftables holds an `ip filter` table with iptables' FORWARD chain."""
    return any("chain" in i and i["chain"]["family"] == "ip" and i["chain"]["table"] == "filter"
               and i["chain"]["name"] == "FORWARD" for i in ruleset)


def read_tables(own_table: str) -> list[Table]:
    """Every table that can hold a chain on our hooks, but our own (both families)."""
    ruleset = nft_ruleset()
    skip = {("ip", own_table), ("bridge", own_table)}
    tables = []
    if iptables_nft_manages(ruleset):
        proc = run(["iptables-nft-save", "-t", "filter"])
        found = iptables_table(proc.stdout, "iptables-nft") if proc is not None and proc.returncode == 0 else None
        if found is not None:
            tables.append(found)
            skip.add(("ip", "filter"))
    tables[:0] = nft_tables(ruleset, skip)
    if legacy_loaded():
        proc = run(["iptables-legacy-save", "-t", "filter"])
        found = iptables_table(proc.stdout, "iptables-legacy") if proc is not None and proc.returncode == 0 else None
        if found is not None:
            tables.append(found)
    return tables


def hidden() -> bool:
    """Whether this process cannot read the firewall (not root)."""
    return os.geteuid() != 0
