"""The scan of system doctor: what objects.py reads of the host, matched against the records.
Read only; each finding names its owner (the container whose pipeline undoes it) and its fix."""
from __future__ import annotations

import os

from steps import DiyError, ipam
from steps.doctor import Finding
from steps.doctor.objects import (
    Objects,
    container_objects,
    host_links,
    listing,
    network_tables,
    our_tables,
    records,
    under,
    user_networks,
)
from steps.names import Names, network_dir


def scan(instance) -> list[Finding]:
    """Everything of this instance that has no record, or whose record it does not match."""
    from steps.image.store import Store

    recs, bad = records(instance)
    per, stray = container_objects(instance)
    found = container_findings(instance, recs, bad, per) + record_findings(instance, recs) + stray
    found += half_made_bridge(instance) + network_findings(instance) + user_network_findings(instance)
    store = Store(instance)
    if os.path.isdir(store.root):
        try:
            with store.quiet() as idle:
                found += store_findings(store, recs, idle)
        except DiyError as e:  # a damaged record or index: said, not fixed
            found.append(Finding("image store", store.root, f"cannot be read: {e}"))
    return found + volume_findings(instance, recs) + temp_files(instance, recs)


def describe(name: str, objs: Objects, why: str, fix: str) -> list[Finding]:
    out = [Finding("mount", mp, why, name, fix) for mp in objs.mounts]
    out += [Finding("cgroup", d, why, name, fix) for d in objs.cgroups]
    out += [Finding("host veth", veth, why, name, fix) for veth in objs.veths]
    out += [Finding("lease", f"{lease} of {name} in leases.json", why, name, fix) for lease in objs.leases]
    out += [Finding("nft rule", c, why, name, fix) for c in sorted(objs.rules)]
    out += [Finding("monitor", f"pid {pid}", why, name, fix) for pid in objs.monitors]
    return out


def container_findings(instance, recs: dict[str, dict], bad: dict[str, str],
                       per: dict[str, Objects]) -> list[Finding]:
    from steps.launch import runtime_facts

    out = [Finding("container record", Names(instance, n).record, why, n, "") for n, why in sorted(bad.items())]
    for name, objs in sorted(per.items()):
        if name in bad:
            continue
        if name not in recs:
            why = f"no container {name} is recorded"
            out += describe(name, objs, why, f"teardown {name}")
            out += [Finding("file", p, why, name, f"teardown {name}") for p in objs.paths]
            continue
        rt, init_alive, monitor_alive = runtime_facts(Names(instance, name))
        if init_alive and not monitor_alive:
            out.append(Finding("container", name, f"its init (pid {rt['init_pid']}) runs without a monitor: "
                               f"nobody records its exit", name, ""))
        elif not (init_alive or monitor_alive):
            why = f"container {name} is not running" + (" (its monitor and init were killed)" if rt else "")
            extra = [Finding("runtime dir", p, why, name, f"stop {name}") for p in objs.paths  # a stop leaves it empty
                     if under(p, os.path.join(instance.run_root, "containers")) and listing(p, ".")]
            out += describe(name, objs, why, f"stop {name}") + extra
    return out


def record_findings(instance, recs: dict[str, dict]) -> list[Finding]:
    """Records whose own objects are gone: the upper layer of one that ran, the image it was made
    from. Said, not fixed: only the user can tell whether to remove it (rm) or what to pull."""
    from steps.image.store import Store

    store, out = Store(instance), []
    for name, record in sorted(recs.items()):
        names = Names(instance, name)
        if (record.get("last") or {}).get("started_at") and not os.path.isdir(names.upper):
            out.append(Finding("container layer", names.upper, f"container {name} ran and its upper layer (what "
                               "it wrote) is gone; `rm` it, or `start` runs it on an empty one", name, ""))
        image_id = record.get("image_id")
        try:
            gone = bool(image_id) and not store.complete(store.image(image_id))
        except DiyError:
            gone = True
        if gone:
            out.append(Finding("container image", str(image_id), f"container {name} was made from it and it is "
                               "not whole in the store: `start` cannot mount it; `rm` it or pull the image again",
                               name, ""))
    return out


def half_made_bridge(instance) -> list[Finding]:
    """network.make_bridge's staging link, marked with our ifalias, that a kill left before its
    rename: of the default network's bridge or of one of our user networks'."""
    from steps import netlink as nl
    from steps import network as net

    links, out = set(host_links()), []
    for inst in [instance, *user_networks(instance).values()]:
        staging = net.staging_bridge(inst)
        if staging not in links:
            continue
        with nl.iproute() as ipr:
            link = nl.link(ipr, staging)
            ours = link is not None and nl.attr(link, "IFLA_IFALIAS") == net.marker(inst)
        out += [Finding("bridge", staging, "a bridge made half way (killed before its rename)", "",
                        "delete the link")] if ours else []
    return out


def network_findings(instance) -> list[Finding]:
    """The instance's default network when no container holds a lease on it: network.prune's to
    remove; the resolver (every network's) and its files only when no container holds a lease
    on any network."""
    from steps import resolver
    from steps.names import resolver_dir

    if ipam.load(instance):
        return []
    why, fix = "no container holds a lease", "network prune"
    out = shared_findings(instance, why, fix)
    anywhere = ipam.anywhere(instance)
    pid = resolver.running(instance) if not anywhere else None
    out += [Finding("resolver", f"pid {pid}", why, "", fix)] if pid is not None else []
    d = network_dir(instance)
    files = [n for n in listing(d, ".") if not anywhere or d != resolver_dir(instance) or n.startswith("leases.json")]
    return out + [Finding("file", os.path.join(d, n), why, "", fix) for n in files]


def shared_findings(inst, why: str, fix: str) -> list[Finding]:
    """A network's bridge (by its ifalias), nft tables (by their owner mark) and firewall accepts
    (by their prefix, which names the bridge)."""
    from steps import netlink as nl
    from steps import network as net

    out = []
    with nl.iproute() as ipr:
        br = nl.link(ipr, inst.bridge)
        if br is not None and nl.attr(br, "IFLA_IFALIAS") == net.marker(inst):
            out.append(Finding("bridge", inst.bridge, why, "", fix))
    out += [Finding("nft table", f"{family} {inst.nft_table}", why, "", fix) for family in our_tables(inst)]
    return out + [Finding("firewall rule", f"{o.place}: {o.flow}", why, "", fix) for o in firewall_rules(inst)]


def idle_networks(instance) -> dict[str, object]:
    """Our user networks on which no container holds a lease, by name (variants, see
    objects.user_networks); and a table of our owner mark and network pattern whose network we
    cannot name (its record and leases gone, no bridge), by the table: its bridge is named by the
    same 8 hex (networks.derived), and its network name is left empty of any real one."""
    from steps.names import bridge_prefix

    known = user_networks(instance)
    nets = {name: inst for name, inst in known.items() if not ipam.load(inst)}
    named = {inst.nft_table for inst in known.values()}
    for table in network_tables(instance):
        if table not in named:
            digest = table[-8:]
            nets[f"?{digest}"] = instance._replace(network_name=f"?{digest}", bridge=bridge_prefix(instance) + digest,
                                                   nft_table=table)
    return nets


def user_network_findings(instance) -> list[Finding]:
    """What a user network holds while no container holds a lease on it: its bridge, tables,
    firewall accepts and leases file, which its last container's veth undo removes. Its record
    is no leftover: a network is kept without containers, as Docker keeps it."""
    out = []
    for name, inst in idle_networks(instance).items():
        label = name if not name.startswith("?") else f"of table {inst.nft_table}"
        why, fix = f"no container holds a lease on network {label}", f"remove network {label}'s bridge and tables"
        out += shared_findings(inst, why, fix)
        if not name.startswith("?"):
            d = network_dir(inst)
            out += [Finding("file", os.path.join(d, n), why, "", fix) for n in listing(d, ".")]
    return out


def firewall_rules(instance) -> list:
    if instance.firewall_compat == "off":
        return []
    from steps.firewall import read_facts

    try:
        return read_facts(instance).have
    except DiyError:
        return []


def store_findings(store, recs: dict[str, dict], idle: bool) -> list[Finding]:
    """Leftovers of the image store (steps.image.store.Store); staged work only while no pull or
    import runs (idle)."""
    out = [Finding("image work dir", p, "its process is gone", "", "remove it") for p in store.dead_tmp()]
    images = {r["id"]: r for r in store.records() if isinstance(r, dict) and "id" in r}
    users = {r.get("image_id") for r in recs.values()} | {r.get("image") for r in recs.values()}
    for image_id, record in sorted(images.items()):
        missing = [d for d in record.get("layers", []) if not os.path.isdir(store.layer_dir(d))]
        if missing and idle:
            fix = "" if image_id in users else "remove the record and unused layers"
            out.append(Finding("image record", store.record_path(image_id), f"{len(missing)} of its layers are "
                               "missing" + (" (a container uses it: rm that container first)" if not fix else ""),
                               "", fix))
    for ref, image_id in sorted(store.index().items()):
        if image_id not in images:
            out.append(Finding("image name", ref, f"it names {image_id}, which has no record", "", "untag it"))
    if idle:
        used = {d for r in images.values() for d in r.get("layers", [])}
        out += [Finding("layer", os.path.join(store.root, "layers", n), "no image record uses it", "", "remove it")
                for n in listing(store.root, "layers") if f"sha256:{n}" not in used]
        out += [Finding("staged layer" if os.path.basename(os.path.dirname(p)) == "staged" else "blob", p,
                        "no pull or import runs", "", "remove it") for p in store.unfinished()]
    links = os.path.join(store.root, "l")
    return out + [Finding("layer link", os.path.join(links, n), "its layer is gone", "", "remove it")
                  for n in listing(links, ".") if not os.path.exists(os.path.join(links, n))]


def volume_findings(instance, recs: dict[str, dict]) -> list[Finding]:
    from steps.storage import volume_store

    out = []
    for name in filter(volume_store.valid_name, listing(volume_store.volumes_root(instance), ".")):
        users = [c for c, r in recs.items() if any(v.get("name") == name for v in volume_store.volume_entries(r))]
        path = volume_store.volume_dir(instance, name)
        if not os.path.exists(volume_store.meta_path(instance, name)):
            out.append(Finding("volume dir", path, "it has no metadata (a volume made half way)", "",
                               "" if users else "remove it"))
        elif not os.path.isdir(volume_store.data_dir(instance, name)):
            out.append(Finding("volume", path, "its _data directory is gone", "", "" if users else "remove it"))
    return out


def temp_files(instance, recs: dict[str, dict]) -> list[Finding]:
    """atomic_write's `<file>.tmp-<pid>` files whose writer is gone: the image store's as
    Store.dead_writes finds them, and by the same test those of the networks (leases, user
    network records), cache and container directories (the places other than the store where
    the tool writes them)."""
    from steps.image.store import Store
    from steps.names import networks_dir
    from steps.state import dead_writes

    dirs = [network_dir(instance), os.path.join(instance.state_root, "cache"), networks_dir(instance)]
    dirs += [network_dir(inst) for inst in user_networks(instance).values()]
    dirs += [Names(instance, n).container_dir for n in recs]
    found = sorted(Store(instance).dead_writes())
    for d in dirs:
        found += dead_writes(d)
    return [Finding("temp file", p, f"its writer (pid {p.rpartition('.tmp-')[2]}) is gone", "", "remove it")
            for p in found]
