"""network.inspect, network.prune and network.repair; network create / ls / inspect NAME / rm."""
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
    """The user networks no container joins, and the default network's bridge, table and accepts
    when no container holds a lease there."""
    from steps.veth import prune as prune_network

    inst = config.load()
    removed = prune_user_networks(inst)
    if removed:
        print("Deleted Networks:\n" + "\n".join(removed))
    holders = prune_network(inst)
    if holders:
        raise DiyError(f"cannot prune the default network: {len(holders)} container(s) hold leases "
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
    leases = {name for held in ipam.anywhere(inst).values() for name in held}  # on any network
    if not out.check:
        print(resolver.repair(inst))
    if not leases:
        print("no container holds a lease: nothing to repair")
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


# --- user-defined networks: network create / ls / inspect NAME / rm, and their prune -----------

def create(name: str, subnet: str | None, labels: list[str]) -> int:
    """docker network create: prints the new network's ID."""
    from steps import networks
    from steps.runflags import parse_labels
    from steps.state import instance_lock

    inst = config.load()
    networks.check_name(name)
    with instance_lock(inst):
        rec = networks.create(inst, name, subnet, parse_labels(labels))
    print(rec["id"])
    return 0


def network_rows(inst) -> list[dict]:
    """The built-in networks and the user-defined ones, as `network ls` lists them."""
    from steps import networks
    from steps.names import sha256

    rows = [{"id": sha256(f"{inst.state_root}\0{n}".encode()).hexdigest(), "name": n,
             "driver": "null" if n == "none" else n, "subnet": inst.subnet if n == "bridge" else "",
             "labels": {}, "created": ""} for n in ("bridge", "host", "none")]
    rows += [{"id": r["id"], "name": r["name"], "driver": "bridge", "subnet": r["subnet"], "labels": r["labels"],
              "created": r["created"]} for r in networks.records(inst)]
    return rows


def ls(quiet: bool, as_json: bool) -> int:
    rows = network_rows(config.load())
    if as_json:
        print(json.dumps(rows, indent=2))
    elif quiet:
        print("\n".join(r["id"][:12] for r in rows))
    else:
        print(f"{'NETWORK ID':<15}{'NAME':<30}{'DRIVER':<10}SCOPE")
        for r in rows:
            print(f"{r['id'][:12]:<15}{r['name']:<30}{r['driver']:<10}local")
    return 0


def docker_view(inst, name: str) -> dict:
    """A network as `docker network inspect` shows it: IPAM, containers with their addresses."""
    from steps import networks
    from steps.names import Names
    from steps.state import load_record

    rec = networks.record(inst, name) if name not in networks.BUILTIN else None
    if rec is None and name not in networks.BUILTIN:
        raise DiyError(f"no such network: {name}")
    row = next(r for r in network_rows(inst) if r["name"] == name)
    on = networks.variant(inst, name) if name not in ("host", "none") else None
    leases, aliases = (ipam.load(on), ipam.aliases(on)) if on is not None else ({}, {})
    containers = {}
    for container, ip in sorted(leases.items()):
        record = load_record(Names(inst, container)) or {}
        containers[record.get("id") or container] = {
            "Name": container, "IPv4Address": f"{ip}/{on.network.prefixlen}", "MacAddress": net.mac_of(ip),
            "Aliases": aliases.get(container, [])}
    subnet = rec["subnet"] if rec else (inst.subnet if name == "bridge" else "")
    ipam_config = [{"Subnet": subnet, "Gateway": rec["gateway"] if rec else net.gateway(inst)}] if subnet else []
    return {"Name": name, "Id": row["id"], "Created": row["created"], "Scope": "local", "Driver": row["driver"],
            "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": {}, "Config": ipam_config},
            "Internal": False, "Attachable": False, "Containers": containers,
            "Options": {"com.docker.network.bridge.name": rec["bridge"] if rec else inst.bridge}
            if name not in ("host", "none") else {},
            "Labels": row["labels"]}


def inspect_named(names: list[str]) -> int:
    inst = config.load()
    print(json.dumps([docker_view(inst, n) for n in names], indent=4))
    return 0


def rm(names: list[str]) -> int:
    """docker network rm: each network no container joins; prints each name removed."""
    from steps import networks
    from steps.state import instance_lock

    inst = config.load()
    failed = None
    for name in names:
        try:
            if name in networks.BUILTIN:
                raise DiyError(f"{name} is a pre-defined network and cannot be removed")
            with instance_lock(inst):
                networks.remove(inst, name)
            print(name)
        except DiyError as e:
            failed = failed or e
    if failed:
        raise failed
    return 0


def prune_user_networks(inst) -> list[str]:
    """User networks no container joins (docker network prune): their records go."""
    from steps import networks
    from steps.state import instance_lock

    removed = []
    with instance_lock(inst):
        for name in networks.names(inst):
            if not networks.users(inst, name):
                networks.remove(inst, name)
                removed.append(name)
    return removed
