"""User-defined networks (`network create`, Compose's networks): records, and the copy of the
instance each one is to the network stages.

    STATE_ROOT/networks/NAME.json   {"name", "id", "subnet", "gateway", "bridge", "nft_table",
                                     "labels", "created", "driver": "bridge"}

A network is its record. Its bridge, nft tables, firewall accepts and leases
(RUN_ROOT/networks/NAME/) exist while a container is attached, as the default
network's do, and go with its last container. To the veth, nat and firewall stages a
user network is the instance with that network's bridge, subnet and table
(`variant()`): the code that wires the default network wires it. Containers of
different networks cannot reach each other (each table drops its bridge's traffic to
any other bridge of the instance); names resolve within a network.
"""
from __future__ import annotations

import ipaddress
import os
import re

from steps import BadInput, DiyError
from steps.config import Instance
from steps.names import bridge_prefix, networks_dir, sha256
from steps.network import joined, overlaps
from steps.state import now_iso, read_json, remove_file, write_json

BUILTIN = ("bridge", "host", "none")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_name(name) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadInput(f"bad network name {str(name)[:70]!r}: use 1-64 letters, digits, '_', '.', '-', "
                       "starting with a letter or digit")
    if name in BUILTIN:
        raise BadInput(f"bad network name {name!r}: {', '.join(BUILTIN)} are built in")
    return name


def path(instance: Instance, name: str) -> str:
    return os.path.join(networks_dir(instance), f"{check_name(name)}.json")


def record(instance: Instance, name: str) -> dict | None:
    return read_json(path(instance, name))


def names(instance: Instance) -> list[str]:
    d = networks_dir(instance)
    return sorted(n[:-5] for n in os.listdir(d) if n.endswith(".json") and _NAME.fullmatch(n[:-5])) \
        if os.path.isdir(d) else []


def records(instance: Instance) -> list[dict]:
    return [r for n in names(instance) if (r := record(instance, n))]


def derived(instance: Instance, name: str) -> tuple[str, str]:
    """The bridge and nft table names of network NAME of this instance."""
    digest = sha256(f"{instance.state_root}\0{instance.cgroup_parent}\0{name}".encode()).hexdigest()
    return bridge_prefix(instance) + digest[:8], f"{instance.nft_table}_n{digest[:8]}"


def variant(instance: Instance, name: str, strict: bool = True) -> Instance:
    """The instance as the network stages see network NAME ("bridge": the instance itself).
    strict=False: a network whose record is gone, by the names derived from its name (to take
    apart what is left of it; its subnet is then unknown)."""
    if name == "bridge":
        return instance
    rec = record(instance, name)
    if rec is None:
        if strict:
            raise DiyError(f"no such network: {name} (see invoke network.ls)")
        bridge, table = derived(instance, name)
        return instance._replace(network_name=name, bridge=bridge, nft_table=table)
    return instance._replace(network_name=name, bridge=rec["bridge"], subnet=rec["subnet"],
                             nft_table=rec["nft_table"])


def attached(instance: Instance, spec: dict, strict: bool = True) -> list[Instance]:
    """variant() of each network a container's spec joins, its primary first."""
    return [variant(instance, name, strict) for name in joined(spec)]


def subnets_in_use(instance: Instance) -> dict[str, ipaddress.IPv4Network]:
    """The instance's default subnet and every user network's, by network name."""
    used = {"bridge": instance.network}
    used.update({r["name"]: ipaddress.IPv4Network(r["subnet"]) for r in records(instance)})
    return used


def host_clashes(subnet: ipaddress.IPv4Network, bridge: str) -> list[str]:
    """The host's addresses and routes inside subnet (but bridge's own)."""
    from steps import netlink as nl

    with nl.iproute() as ipr:
        return overlaps(ipr, Instance(bridge=bridge, subnet=str(subnet)))


def choose_subnet(instance: Instance, bridge: str) -> ipaddress.IPv4Network:
    """The first subnet of the pool that no network of ours and nothing of the host's uses."""
    taken = list(subnets_in_use(instance).values())
    for candidate in instance.pool.subnets(new_prefix=instance.network_size):
        if not any(candidate.overlaps(t) for t in taken) and not host_clashes(candidate, bridge):
            return candidate
    raise DiyError(f"no free subnet left in network_pool {instance.network_pool}: remove unused networks "
                   "(invoke network.prune) or give --subnet")


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as e:
        raise BadInput(f"bad subnet {text!r}: {e} (expected e.g. 10.90.0.0/24)") from None
    if net.prefixlen > 29:
        raise BadInput(f"bad subnet {text!r}: too small, use /29 or larger")
    return net


def create(instance: Instance, name: str, subnet: str | None = None, labels: dict | None = None) -> dict:
    """Record network NAME (its subnet checked against ours and the host's); callers hold the
    instance lock. An existing network of that name is refused."""
    check_name(name)
    if record(instance, name) is not None:
        raise DiyError(f"network {name} already exists")
    bridge, table = derived(instance, name)
    if subnet:
        net = parse_subnet(subnet)
        for other, used in subnets_in_use(instance).items():
            if net.overlaps(used):
                raise BadInput(f"cannot create network {name} with {net}: it overlaps network {other}'s {used}; "
                               "choose another --subnet")
        if clashes := host_clashes(net, bridge):
            raise BadInput(f"cannot create network {name} with {net}: it overlaps the host's "
                           f"{', '.join(sorted(set(clashes)))}; choose another --subnet")
    else:
        net = choose_subnet(instance, bridge)
    rec = {"name": name, "id": os.urandom(32).hex(), "driver": "bridge", "subnet": str(net),
           "gateway": str(next(net.hosts())), "bridge": bridge, "nft_table": table,
           "labels": dict(labels or {}), "created": now_iso()}
    write_json(path(instance, name), rec)
    return rec


def users(instance: Instance, name: str) -> list[str]:
    """The containers whose record joins network NAME."""
    from steps.names import containers_dir

    root, found = containers_dir(instance), []
    for container in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        try:
            rec = read_json(os.path.join(root, container, "info.json"))
        except DiyError:
            continue
        if rec is not None and name in joined(rec):
            found.append(container)
    return found


def remove(instance: Instance, name: str) -> None:
    """Forget network NAME; refused while a container joins it. Callers hold the instance lock."""
    if record(instance, name) is None:
        raise DiyError(f"no such network: {name}")
    if attached := users(instance, name):
        raise DiyError(f"network {name} is in use by container {', '.join(attached)}; remove them first")
    remove_file(path(instance, name))
    try:
        os.rmdir(networks_dir(instance))
    except OSError:
        pass
