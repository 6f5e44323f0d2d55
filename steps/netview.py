"""network.inspect and network.prune."""
from __future__ import annotations

import json

from steps import DiyError, config, ipam
from steps import netlink as nl
from steps import network as net
from steps.nat import drop_table, table_text
from steps.state import instance_lock


def inspect(as_json: bool) -> int:
    inst = config.load()
    leases = ipam.load(inst)
    with nl.iproute() as ipr:
        br = nl.link(ipr, inst.bridge)
    info = {"bridge": inst.bridge, "bridge_present": br is not None, "subnet": inst.subnet,
            "gateway": net.gateway(inst), "leases": leases,
            "published": [{k: p[k] for k in ("name", "proto", "host_ip", "host_port", "ip", "container_port")}
                          for p in net.published(inst, leases)],
            "nft_table": inst.nft_table, "table": table_text(inst), "antispoof_table": table_text(inst, "bridge")}
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"bridge  {inst.bridge} ({'up' if br is not None else 'absent'}), subnet {inst.subnet}, "
          f"gateway {info['gateway']}")
    for name, ip in sorted(leases.items()):
        print(f"lease   {ip:<16} {name}")
    for p in info["published"]:
        print(f"publish {p['host_ip']}:{p['host_port']}/{p['proto']} -> {p['ip']}:{p['container_port']} ({p['name']})")
    print(info["table"] or f"nft table ip {inst.nft_table}: absent")
    print(info["antispoof_table"] or f"nft table bridge {inst.nft_table}: absent")
    return 0


def prune() -> int:
    inst = config.load()
    with instance_lock(inst):
        leases = ipam.load(inst)
        if leases:
            raise DiyError(f"cannot prune the network: {len(leases)} container(s) hold leases "
                           f"({', '.join(sorted(leases))}); stop them first")
        ipam.save(inst, {})
        drop_table(inst)
        with nl.iproute() as ipr:
            net.remove_bridge(ipr, inst)
    print("network pruned")
    return 0
