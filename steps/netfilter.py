"""What the host's firewall does to our bridge's traffic: facts for the firewall stage.

Every base chain that our bridge's traffic meets is read - from nftables (every table but our
own, `nft -j list ruleset`), and from iptables' own tables through their `-save` text (nft's
JSON shows iptables' conntrack, comment and NAT as bare "xt"): iptables-nft's, and
iptables-legacy's when they are loaded. Each base chain is walked, jumps, gotos and returns
followed, for five flows of ours. A match is answered yes, no or "cannot tell" (a port, a
mark, a named set, an xt match, a rate limit); the walk keeps every outcome a packet of the
flow could meet. A drop among them makes a Blocker: "sure" when every match on the way to it
said yes (a policy, or a blanket drop: what our accepts are for), else a drop the firewall's
owner aimed at something we cannot tell apart - reported, never overridden.
"""
from __future__ import annotations

import ipaddress
import json
import re
import shlex
import subprocess
from typing import NamedTuple

YES, NO, MAYBE = True, False, None
HOOKS = ("forward", "prerouting", "postrouting")
IPTABLES_NAMES = ("filter", "nat", "mangle", "raw", "security")
IPTABLES_BASE = {"FORWARD": "forward", "PREROUTING": "prerouting", "POSTROUTING": "postrouting"}
NON_TERMINAL_TARGETS = {"LOG", "NFLOG", "MARK", "CONNMARK", "TRACE", "AUDIT", "CLASSIFY", "DSCP", "TOS",
                        "TCPMSS", "CT", "CONNSECMARK", "SECMARK", "NOTRACK", "TEE", "ULOG", "TTL", "HL"}
NAT_TARGETS = {"DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"}  # end a nat chain, never drop
NFT_NAT = {"dnat", "snat", "masquerade", "redirect"}
NFT_STATEMENTS = {"counter", "log", "meta", "mangle", "notrack", "set", "ct", "synproxy", "flow", "tproxy"}
NFT_CONDITIONS = {"limit", "quota", "ct count", "meter", "xt"}  # statements that decide whether a rule goes on


class Flow(NamedTuple):
    """One kind of our bridge's traffic as a hook sees it. An interface of None is "some other
    interface"; an address of None is "any address"; dnat None is "cannot tell"."""

    name: str
    iif: str | None
    oif: str | None
    saddr: ipaddress.IPv4Network | None
    daddr: ipaddress.IPv4Network | None
    state: str
    dnat: bool | None


FLOW_TEXT = {"out": "containers to other hosts", "reply": "what containers send on a connection",
             "local": "container to container", "back": "replies into the bridge",
             "published": "published ports"}


BRIDGE_HOOK_FLOWS = {"prerouting": ("out", "reply", "local"), "input": ("out", "reply"),
                     "forward": ("local",), "output": ("back", "published"),
                     "postrouting": ("local", "back", "published")}  # what a bridge-family hook sees of ours


def flows(bridge: str, subnet: ipaddress.IPv4Network, hook: str = "forward", family: str = "ip") -> list[Flow]:
    found = [Flow("out", bridge, None, subnet, None, "new", False),
             Flow("reply", bridge, None, subnet, None, "established", None),
             Flow("local", bridge, bridge, subnet, subnet, "new", False),
             Flow("back", None, bridge, None, subnet, "established", None),
             Flow("published", None, bridge, None, subnet, "new", True)]
    if family == "bridge":
        return [f for f in found if f.name in BRIDGE_HOOK_FLOWS.get(hook, ())]
    if hook == "prerouting":  # not routed yet, and before DNAT and de-SNAT
        found = [f._replace(oif=None, daddr=None if f.iif is None else f.daddr) for f in found]
    return found


class Match(NamedTuple):
    """One condition: key is iif, oif, saddr, daddr, state, status, nfproto, ip6 or other
    (which cannot be told); values are what it compares with."""

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
    unwritable: str = ""  # why we must not add a rule here ("" when we may)

    @property
    def where(self) -> str:
        return f"nft {self.family} {self.name}" if self.backend == "nft" else f"{self.backend} {self.name}"


class Blocker(NamedTuple):
    """A base chain that drops (certain) or may drop a flow, and why; sure: a drop our accept
    may get past (a policy, or a drop every match on the way to said yes to)."""

    table: Table
    chain: str
    hook: str
    flow: str
    why: str
    certain: bool
    sure: bool

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


def answer(m: Match, flow: Flow, bridge: str, family: str = "ip") -> bool | None:
    if m.key in ("iif", "oif"):
        if family == "bridge":
            return MAYBE  # the bridge family names ports (veths), not the bridge
        got = answer_iface(m.values, flow.iif if m.key == "iif" else flow.oif, bridge)
    elif m.key in ("saddr", "daddr"):
        got = answer_addr(m.values, flow.saddr if m.key == "saddr" else flow.daddr)
    elif m.key == "state":
        got = flow.state in m.values
    elif m.key == "status":
        if set(m.values) != {"dnat"} or flow.dnat is None:
            return MAYBE
        got = flow.dnat
    elif m.key == "nfproto":
        got = "ipv4" in m.values
    elif m.key == "ip6":
        got = NO  # our flows are IPv4
    else:
        return MAYBE
    return got if got is MAYBE or not m.negate else not got


def rule_answer(rule: Rule, flow: Flow, bridge: str, family: str) -> bool | None:
    answers = [answer(m, flow, bridge, family) for m in rule.matches]
    if NO in answers:
        return NO
    return MAYBE if MAYBE in answers else YES


# --- walking chains -------------------------------------------------------------------

class Outcome(NamedTuple):
    verdict: str  # accept, drop, or "" (returned, or fell off the end)
    sure: bool    # every match on the way said yes
    why: str


def walk(table: Table, chain: str, flow: Flow, bridge: str, skip: str, sure: bool = True,
         depth: int = 0) -> list[Outcome]:
    """Every outcome a packet of the flow may meet in a chain; rules whose comment starts
    with skip (ours) are left out."""
    if depth > 16 or chain not in table.chains:
        return [Outcome("drop", False, f"chain {chain} cannot be followed")]
    out: list[Outcome] = []
    for rule in table.chains[chain].rules:
        if skip and rule.comment.startswith(skip):
            continue
        got = rule_answer(rule, flow, bridge, table.family)
        if got is NO or rule.verdict == "continue":
            continue
        here = sure and got is YES
        why = f"{chain}: {rule.text}"
        if rule.verdict in ("jump", "goto"):
            inner = walk(table, rule.target, flow, bridge, skip, here, depth + 1)
            out += [o for o in inner if o.verdict or rule.verdict == "goto"]
            if got is YES and (rule.verdict == "goto" or all(o.verdict for o in inner)):
                return out
            continue
        if rule.verdict == "unknown":
            out.append(Outcome("drop", False, why))  # an action we cannot tell (a queue, an xt target)
            continue
        out.append(Outcome("" if rule.verdict == "return" else rule.verdict, here, why))
        if got is YES:
            return out
    return out + [Outcome("", sure, "")]


def blockers(tables: list[Table], bridge: str, subnet: ipaddress.IPv4Network, skip: str) -> list[Blocker]:
    """Every base chain that drops, or may drop, one of our flows."""
    found = []
    for table in tables:
        for chain in table.chains.values():
            if chain.hook not in HOOKS and not (table.family == "bridge" and chain.hook):
                continue
            for flow in flows(bridge, subnet, chain.hook, table.family):
                outcomes = [o if o.verdict else o._replace(verdict=chain.policy, why=f"policy {chain.policy}")
                            for o in walk(table, chain.name, flow, bridge, skip)]
                drops = [o for o in outcomes if o.verdict == "drop"]
                if drops:
                    first = next((o for o in drops if o.sure), drops[0])
                    found.append(Blocker(table, chain.name, chain.hook, flow.name, first.why,
                                         len(drops) == len(outcomes), first.sure))
    return found


# --- nftables ---------------------------------------------------------------------------

NFT_KEYS = {("meta", "iifname"): "iif", ("meta", "iif"): "iif", ("meta", "oifname"): "oif",
            ("meta", "oif"): "oif", ("payload", "ip", "saddr"): "saddr", ("payload", "ip", "daddr"): "daddr",
            ("ct", "state"): "state", ("ct", "status"): "status", ("meta", "nfproto"): "nfproto"}


def nft_key(left) -> str:
    if not isinstance(left, dict) or len(left) != 1:
        return "other"
    (kind, body), = left.items()
    if not isinstance(body, dict):
        return "other"
    if kind == "payload" and body.get("protocol") == "ip6":
        return "ip6"
    field = (kind, body["protocol"], body.get("field")) if kind == "payload" and "protocol" in body else \
        (kind, body.get("key"))
    return NFT_KEYS.get(field, "other")


def nft_values(right, key: str) -> tuple | None:
    """The values of a match's right side, or None when they cannot be read (a named set too)."""
    if isinstance(right, dict) and "set" in right:
        right = right["set"]
    items = right if isinstance(right, list) else [right]
    out = []
    for item in items:
        if isinstance(item, str) and item.startswith("@"):
            return None
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
    key, op = nft_key(expr.get("left")), expr.get("op", "==")
    values = nft_values(expr.get("right"), key) if key not in ("other", "ip6") else ()
    if key == "other" or values is None or op not in ("==", "!=", "in"):
        return Match("other", False, (json.dumps(expr, sort_keys=True),))
    return Match(key, op == "!=", values)


def nft_verdict(kind: str, body, nat: bool) -> tuple[str, str] | None:
    """(verdict, target) of a verdict statement, None for anything else."""
    if kind in ("accept", "drop", "return", "continue"):
        return kind, ""
    if kind == "reject":
        return "drop", ""
    if kind in ("jump", "goto"):
        return kind, body.get("target", "")
    if kind in NFT_NAT or (nat and kind == "xt" and isinstance(body, dict) and body.get("type") == "target"):
        return "accept", ""  # ends a nat chain without dropping
    if kind in ("queue", "xt") and (kind == "queue" or (isinstance(body, dict) and body.get("type") == "target")):
        return "unknown", ""
    return None


def nft_rules(item: dict, nat: bool) -> list[Rule]:
    """A rule of nft's JSON; a verdict map makes one rule per element."""
    matches: list[Match] = []
    verdict, target, vmap = "continue", "", None
    for expr in item.get("expr", []):
        (kind, body), = expr.items()
        if kind == "match":
            matches.append(nft_match(body))
        elif kind == "vmap":
            vmap = body
        elif (v := nft_verdict(kind, body, nat)) is not None:
            verdict, target = v
        elif kind in NFT_CONDITIONS or kind not in NFT_STATEMENTS:
            matches.append(Match("other", False, (kind,)))
    comment, handle = item.get("comment", ""), int(item.get("handle", 0))
    if vmap is None:
        return [nft_rule(matches, verdict, target, comment, handle)]
    rules = []
    elements = (vmap.get("data") or {}).get("set") or []
    for element in elements if isinstance(elements, list) else []:
        if isinstance(element, list) and len(element) == 2 and isinstance(element[1], dict) and element[1]:
            (kind, body), = element[1].items()
            v = nft_verdict(kind, body, nat) or ("unknown", "")
            key = nft_match({"left": vmap.get("key"), "op": "==", "right": element[0]})
            rules.append(nft_rule([*matches, key], v[0], v[1], comment, handle))
    return rules or [nft_rule([*matches, Match("other", False, ("vmap",))], "unknown", "", comment, handle)]


def nft_rule(matches: list[Match], verdict: str, target: str, comment: str, handle: int) -> Rule:
    text = " ".join([*(describe(m) for m in matches), verdict, target]).strip()
    return Rule(tuple(matches), verdict, target, text, comment, handle, ())


def describe(m: Match) -> str:
    names = {"iif": "iifname", "oif": "oifname", "saddr": "ip saddr", "daddr": "ip daddr", "state": "ct state",
             "status": "ct status", "nfproto": "meta nfproto", "ip6": "ip6", "other": "(a match)"}
    values = ",".join(str(v) for v in m.values) if m.key not in ("other", "ip6") else ""
    return f"{names[m.key]}{' !=' if m.negate else ''} {values}".strip()


def nft_tables(ruleset: list[dict], skip_tables: set[tuple[str, str]], unwritable: dict) -> list[Table]:
    """The ip, inet and bridge tables of a ruleset (nft -j list ruleset), but skip_tables;
    unwritable: (family, name) -> why we must not write there."""
    tables: dict[tuple[str, str], Table] = {}
    kinds: dict[tuple[str, str, str], str] = {}
    for item in ruleset:
        if "chain" in item:
            c = item["chain"]
            key = (c["family"], c["table"])
            if c["family"] not in ("ip", "inet", "bridge") or key in skip_tables:
                continue
            tables.setdefault(key, Table("nft", c["family"], c["table"], {}, unwritable.get(key, "")))
            tables[key].chains[c["name"]] = Chain(c["name"], c.get("hook", ""), c.get("policy", "accept"), ())
            kinds[(*key, c["name"])] = c.get("type", "")
    rules: dict[tuple[str, str, str], list[Rule]] = {}
    for item in ruleset:
        if "rule" in item:
            r = item["rule"]
            where = (r["family"], r["table"], r["chain"])
            if where[:2] in tables:
                rules.setdefault(where, []).extend(nft_rules(r, kinds.get(where) == "nat"))
    for (family, table, chain), found in rules.items():
        chains = tables[(family, table)].chains
        if chain in chains:
            chains[chain] = chains[chain]._replace(rules=tuple(found))
    return list(tables.values())


# --- iptables -----------------------------------------------------------------------------

def options(args: list[str]) -> list[tuple[bool, str, list[str]]]:
    """(negated, option, its values) for each option of an iptables-save rule."""
    out: list[tuple[bool, str, list[str]]] = []
    negate = False
    for word in args:
        if out and out[-1][1] == "--comment" and not out[-1][2]:
            out[-1][2].append(word)  # a comment may start with "-"
        elif word == "!":
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
            matches.append(Match("other", negate, (f"--ctstatus {value}",)))
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
    if target in NAT_TARGETS:
        return "accept", ""
    return ("jump" if flag == "-j" else "goto"), target  # an extension target (NFQUEUE) when no such chain


def iptables_tables(text: str, backend: str) -> list[Table]:
    """Every table of an iptables-save text."""
    tables: list[Table] = []
    chains: dict[str, Chain] = {}
    rules: dict[str, list[Rule]] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            chains, rules = {}, {}
            tables.append(Table(backend, "ip", line[1:].strip(), chains))
        elif not tables or line.startswith("#"):
            continue
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            hook = IPTABLES_BASE.get(name, "")
            chains[name] = Chain(name, hook, policy.lower() if hook else "", ())
        elif line.startswith("-A "):
            words = shlex.split(line)
            rules.setdefault(words[1], []).append(iptables_rule(words[2:]))
        elif line == "COMMIT":
            for name, found in rules.items():
                if name in chains:
                    known = [r if r.verdict not in ("jump", "goto") or r.target in chains
                             else r._replace(verdict="unknown") for r in found]
                    chains[name] = chains[name]._replace(rules=tuple(known))
    return tables


def iptables_table(text: str, backend: str, table: str = "filter") -> Table | None:
    return next((t for t in iptables_tables(text, backend) if t.name == table), None)


# --- reading the host ------------------------------------------------------------------------

class Firewall(NamedTuple):
    tables: list[Table]
    unread: list[str]  # what could not be read, and why


def run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess | None:
    """None when the program is not installed."""
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return None


def first_line(proc: subprocess.CompletedProcess | None, program: str) -> str:
    if proc is None:
        return f"{program} is not installed"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("# Warning")]
    return lines[0] if lines else f"{program} failed ({proc.returncode})"


def legacy_names() -> list[str]:
    """The legacy iptables tables loaded in this network namespace (reading them with
    iptables-legacy-save would load them: this file does not)."""
    try:
        with open("/proc/net/ip_tables_names") as f:
            return f.read().split()
    except OSError:
        return []


def iptables_nft_tables(ruleset: list[dict]) -> set[str]:
    """The `ip` tables of nftables that iptables-nft made (iptables' names and base chains)."""
    return {c["table"] for i in ruleset if "chain" in i for c in [i["chain"]]
            if c["family"] == "ip" and c["table"] in IPTABLES_NAMES and c.get("hook") and c["name"].isupper()}


def read_firewall(own_table: str) -> Firewall:
    """Every table that can hold a chain our traffic meets, but our own (both families)."""
    from steps import nftables

    proc = nftables.completed("list ruleset", json_out=True)
    if proc is None or proc.returncode != 0:
        return Firewall([], [f"nftables: {first_line(proc, 'nft')}"])
    ruleset = json.loads(proc.stdout or "{}").get("nftables", [])
    skip, unwritable, tables, unread = set(), {}, [], []
    base = re.sub(r"_n[0-9a-f]{8}$", "", own_table)  # a user network's table: the instance's tables are all ours
    for entry in ruleset:
        t = entry.get("table") if isinstance(entry, dict) else None
        if t and t.get("family") in ("ip", "bridge") and \
                re.fullmatch(re.escape(base) + r"(_n[0-9a-f]{8})?", str(t.get("name", ""))):
            skip.add((t.get("family"), t["name"]))
    managed = iptables_nft_tables(ruleset)
    if managed:
        proc = run(["iptables-nft-save"])
        found = iptables_tables(proc.stdout, "iptables-nft") if proc is not None and proc.returncode == 0 else []
        for t in found:
            skip.add(("ip", t.name))
        tables += found
        why = f"iptables-nft's table, unreadable by iptables-nft-save: {first_line(proc, 'iptables-nft-save')}"
        for name in managed - {t.name for t in found}:  # read from nft's JSON, never written with nft
            unwritable[("ip", name)] = why
    tables[:0] = nft_tables(ruleset, skip, unwritable)
    if loaded := legacy_names():
        proc = run(["iptables-legacy-save"])
        if proc is None or proc.returncode != 0:
            unread.append(f"iptables-legacy tables {', '.join(loaded)}: {first_line(proc, 'iptables-legacy-save')}")
        else:
            tables += iptables_tables(proc.stdout, "iptables-legacy")
    return Firewall(tables, unread)
