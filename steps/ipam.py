"""IP leases: one address per container, kept in a file under the runtime root.

Callers hold the instance lock. Leases are reconciled against what exists: a lease
whose container has no record any more is free again. The file is written
atomically, so a kill in the middle of an allocation leaves the old or the new
file, and two containers never share an address.
"""
from __future__ import annotations

import ipaddress
import os

from steps import StepFailed
from steps.names import Names, containers_dir, network_dir
from steps.state import read_json, write_json


def pick(network: ipaddress.IPv4Network, used: set[str], preferred: str | None = None) -> str:
    """The preferred address when free and valid, else the lowest free host after the gateway."""
    gateway = next(network.hosts())
    taken = used | {str(gateway)}
    if preferred and preferred not in taken:
        try:
            if ipaddress.IPv4Address(preferred) in network and preferred != str(network.broadcast_address):
                return preferred
        except ValueError:
            pass
    for host in network.hosts():
        if str(host) not in taken:
            return str(host)
    raise StepFailed(f"cannot lease an address: all of {network} is in use")


def path(instance) -> str:
    return os.path.join(network_dir(instance), "leases.json")


def load(instance) -> dict[str, str]:
    leases = (read_json(path(instance)) or {}).get("leases", {})
    alive = set(os.listdir(containers_dir(instance))) if os.path.isdir(containers_dir(instance)) else set()
    return {name: ip for name, ip in leases.items() if name in alive}


def aliases(instance) -> dict[str, list[str]]:
    """Other names a container answers to on this network (Compose's service name, --network-alias)."""
    return (read_json(path(instance)) or {}).get("aliases", {})


def save(instance, leases: dict[str, str], new_aliases: dict[str, list[str]] | None = None) -> None:
    if leases:
        kept = {n: a for n, a in {**aliases(instance), **(new_aliases or {})}.items() if n in leases and a}
        write_json(path(instance), {"leases": dict(sorted(leases.items())), "aliases": dict(sorted(kept.items()))})
        return
    directory = network_dir(instance)
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if name.startswith("leases.json"):  # with a .tmp-PID a kill may have left
            os.unlink(os.path.join(directory, name))
    for d in (directory, os.path.dirname(directory)) if instance.network_name else (directory,):
        try:
            os.rmdir(d)  # (a user network's, then RUN_ROOT/networks once the last is gone)
        except OSError:
            pass


def allocate(names: Names, preferred: str | None, alias: list[str] | tuple = ()) -> str:
    leases = load(names.instance)
    if names.container in leases and aliases(names.instance).get(names.container, []) == list(alias):
        return leases[names.container]
    others = {ip for name, ip in leases.items() if name != names.container}
    leases[names.container] = leases.get(names.container) or pick(names.instance.network, others, preferred)
    save(names.instance, leases, {names.container: list(alias)})
    return leases[names.container]


def release(names: Names) -> None:
    leases = load(names.instance)
    if leases.pop(names.container, None) is not None or not leases:
        save(names.instance, leases)


def anywhere(instance) -> dict[str, dict[str, str]]:
    """The leases of every network of the instance that has any: {network name ("" for the
    default one): {container: address}} (the resolver and the network go with the last)."""
    found = {"": load(instance._replace(network_name=""))}
    user = os.path.join(instance.run_root, "networks")
    for name in sorted(os.listdir(user)) if os.path.isdir(user) else []:
        found[name] = load(instance._replace(network_name=name))
    return {k: v for k, v in found.items() if v}
