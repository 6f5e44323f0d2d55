"""network.inspect, network.prune and network.repair."""
from __future__ import annotations

import json

from steps import DiyError, config, ipam, resolver
from steps import netlink as nl
from steps import network as net
from steps.firewall import read_facts
from steps.nat import table_text


def firewall_view(inst) -> dict:
    """What in the host's firewall drops the bridge's traffic, and the accepts of ours there."""
    facts = read_facts(inst)
    return {"mode": inst.firewall_compat,
            "drops": [{"where": f"{b.table.where} {b.chain}", "hook": b.hook, "flow": b.flow, "why": b.why,
                       "certain": b.certain, "ours_to_pass": b.sure, "text": str(b)} for b in facts.blockers],
            "ours": sorted(f"{o.place}: {o.flow}" for o in facts.have),
            "unfixable": facts.unfixable, "unread": facts.unread}


def inspect(as_json: bool) -> int:
    inst = config.load()
    leases = ipam.load(inst)
    with nl.iproute() as ipr:
        br = nl.link(ipr, inst.bridge)
    info = {"bridge": inst.bridge, "bridge_present": br is not None, "subnet": inst.subnet,
            "gateway": net.gateway(inst), "leases": leases,
            "published": [{k: p[k] for k in ("name", "proto", "host_ip", "host_port", "ip", "container_port")}
                          for p in net.published(inst, leases)],
            "nft_table": inst.nft_table, "table": table_text(inst), "antispoof_table": table_text(inst, "bridge"),
            "firewall": firewall_view(inst), "resolver_pid": resolver.running(inst)}
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"bridge  {inst.bridge} ({'up' if br is not None else 'absent'}), subnet {inst.subnet}, "
          f"gateway {info['gateway']}")
    pid = info["resolver_pid"]
    print(f"resolver 127.0.0.11 in each container: {f'running (pid {pid})' if pid else 'not running'}")
    for name, ip in sorted(leases.items()):
        print(f"lease   {ip:<16} {name}")
    for p in info["published"]:
        print(f"publish {p['host_ip']}:{p['host_port']}/{p['proto']} -> {p['ip']}:{p['container_port']} ({p['name']})")
    print(info["table"] or f"nft table ip {inst.nft_table}: absent")
    print(info["antispoof_table"] or f"nft table bridge {inst.nft_table}: absent")
    print_firewall(inst.bridge, info["firewall"])
    return 0


def print_firewall(bridge: str, fw: dict) -> None:
    print(f"firewall (firewall_compat: {fw['mode']})")
    if not fw["drops"]:
        print(f"  nothing in the host's firewall drops traffic of {bridge}")
    for d in fw["drops"]:
        owner = "" if d["ours_to_pass"] else " (aimed at something else: left to the firewall's owner)"
        print(f"  {'drops   ' if d['certain'] else 'may drop'} {d['flow']:<9} {d['where']} ({d['hook']}): "
              f"{d['why']}{owner}")
    for o in fw["ours"]:
        print(f"  accept  {o}")
    for u in fw["unfixable"]:
        print(f"  no accept of ours can pass: {u}")
    for u in fw["unread"]:
        print(f"  cannot read {u}")


def prune() -> int:
    from steps.veth import prune as prune_network

    holders = prune_network(config.load())
    if holders:
        raise DiyError(f"cannot prune the network: {len(holders)} container(s) hold leases "
                       f"({', '.join(holders)}); stop them first")
    print("network pruned")
    return 0


def repair(out) -> int:
    """The repair pipeline (nat and firewall applied again) for every container holding a lease."""
    from steps.cli.containers import settled
    from steps.names import Names
    from steps.pipeline import Context, Engine
    from steps.state import load_record

    inst = config.load()
    leases = ipam.load(inst)
    if not out.check:
        print(resolver.repair(inst))
    if not leases:
        print(f"no container holds a lease on {inst.bridge}: nothing to repair")
        return 0
    reporter = out.reporter(attached=False)
    for name in sorted(leases):
        names = Names(inst, name)
        with settled(names, out.check):
            record = load_record(names)
            if record is not None:
                Engine(Context(inst, names, record, attach=False), reporter, check_only=out.check,
                       pipeline="repair").run("repair")
    reporter.recap(inst.bridge, "network.repair")
    return 0
