"""The fix of system doctor: what scan finds, undone by the code that owns it - a container's
objects by its own pipeline, the network by network prune's removal, the image store by the
store's own, a volume by volume_store's."""
from __future__ import annotations

import os
import signal
import time

from steps import DiyError, ipam
from steps.doctor import Finding, Outcome
from steps.doctor.objects import container_objects, monitors, raw_leases, records, user_networks
from steps.doctor.scan import half_made_bridge, idle_networks, scan, volume_findings
from steps.names import Names, veth_prefix


def fix(instance, reporter) -> list[Outcome]:
    """Undo what scan() finds: each container's objects through its own pipeline first (the
    last lease takes the network with it), then what is left of the shared objects."""
    outcomes: list[Outcome] = []
    for _ in range(2):  # a monitor finishing after our undo may leave its lock file: once more
        owners = sorted({f.owner for f in scan(instance) if f.owner and f.fix})
        if not owners:
            break
        per, _ = container_objects(instance)
        outcomes += [fix_container(instance, name, reporter, sorted(per[name].networks) if name in per else [])
                     for name in owners]
    return outcomes + fix_shared(instance, scan(instance))


def fix_container(instance, name: str, reporter, networks: list[str] = (), again: bool = False) -> Outcome:
    """A name without a record: the rm pipeline, as `teardown NAME`, on the default network and
    the user networks it left something on (networks: its spec is gone, so the objects tell);
    a record not running whose objects are left: the stop pipeline, and the record says it
    stopped, as `stop` writes it."""
    from steps.launch import runtime_facts
    from steps.pipeline import Context, Engine
    from steps.state import container_lock, load_record, now_iso, update_record

    names = Names(instance, name)
    lock = container_lock(names).acquire()
    try:
        record = load_record(names)
        rt, init_alive, monitor_alive = runtime_facts(names)
        if record is not None and (init_alive or monitor_alive):
            return Outcome(name, "", "it runs: stop it first")
        pipeline = "stop" if record is not None else "rm"
        spec = record or {"name": name, **({"networks": ["bridge", *networks]} if networks else {})}
        Engine(Context(instance, names, spec, attach=False), reporter, pipeline="doctor").run(pipeline)
        last = (record or {}).get("last") or {}
        if record is not None and (rt is not None or last.get("started_at")) and not last.get("finished_at"):
            update_record(names, finished_at=now_iso(), exit_code=None)  # as `stop` does: nobody else will
    except DiyError as e:
        return Outcome(name, "", str(e))
    finally:
        if not os.path.isdir(names.container_dir):
            lock.remove()
        lock.release()
    end_monitors(instance, name)
    if record is None and not again and (os.path.lexists(names.container_dir) or os.path.lexists(names.runtime_dir)):
        return fix_container(instance, name, reporter, networks, again=True)  # its monitor raced the undos
    drop_stale_lease(instance, name)
    return Outcome(name, f"the {pipeline} pipeline's undos")


def end_monitors(instance, name: str, timeout: float = 10) -> None:
    """A monitor of a name without a record finishes once its init is gone; one that does not
    in time is killed (it runs our shim from our run root: it is ours)."""
    from steps.facts import process_alive, process_start

    pids = [(pid, process_start(pid)) for pid in monitors(instance).get(name, [])]
    deadline = time.monotonic() + timeout
    while any(process_alive(p, s) for p, s in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid, start in pids:
        if process_alive(pid, start):
            os.kill(pid, signal.SIGKILL)


def drop_stale_lease(instance, name: str) -> None:
    """A lease of a name without a container dir is invisible to ipam.load and so stays in the
    file while others hold leases: write the file again as ipam reconciles it."""
    from steps.state import instance_lock

    for inst in [instance, *user_networks(instance).values()]:
        if name not in raw_leases(inst):
            continue
        with instance_lock(instance):
            live = ipam.load(inst)
            if name not in live:
                ipam.save(inst, live)


def fix_shared(instance, found: list[Finding]) -> list[Outcome]:
    out = []
    todo = [f for f in found if not f.owner and f.fix]
    if any(f.fix == "network prune" for f in todo):
        out.append(attempt("network", "network prune's removal", prune_network, instance))
    if any(f.fix.startswith("remove network ") for f in todo):
        for name, inst in sorted(idle_networks(instance).items()):
            label = f"network {name}" if not name.startswith("?") else f"network of table {inst.nft_table}"
            out.append(attempt(label, "its last container's removal of its bridge and tables",
                               remove_user_network, instance, inst))
    for f in todo:
        if f.what == "host veth" or f.fix == "delete the link":
            out.append(attempt(f.where, "deleted", delete_link, instance, f.where))
        elif f.what in ("volume dir", "volume"):
            out.append(attempt(f.where, "removed", remove_volume, instance, os.path.basename(f.where)))
        elif f.what == "cgroup":
            out.append(attempt(f.where, "removed", remove_cgroup_parent, instance, f.where))
        elif f.what == "temp file":
            out.append(attempt(f.where, "removed", remove_temp, f.where))
    if any(f.what.startswith(("image", "layer", "staged", "blob")) for f in todo):
        out.append(attempt("image store", "the store's own removal", fix_store, instance))
    return out


def attempt(target: str, done: str, fn, *args) -> Outcome:
    try:
        fn(*args)
    except (DiyError, OSError) as e:
        return Outcome(target, "", str(e))
    return Outcome(target, done)


def prune_network(instance) -> None:
    """What network.prune (steps.veth.prune) does once no container holds a lease on the default
    network, but the resolver - every network's - stops only once none holds one on any."""
    from steps import netlink as nl
    from steps import resolver
    from steps.state import instance_lock
    from steps.veth import remove_shared

    with instance_lock(instance):
        if ipam.load(instance):
            return
        ipam.save(instance, {})
        if not ipam.anywhere(instance):
            resolver.stop(instance)
        with nl.iproute() as ipr:
            remove_shared(ipr, instance)


def remove_user_network(instance, inst) -> None:
    """What the veth undo of a user network's last container does (steps.veth.Wire.undo, then
    ipam.release): its firewall accepts, tables and bridge, then its leases; under the instance
    lock, once no container holds a lease on it. Its record stays (a network outlives its
    containers)."""
    from steps import netlink as nl
    from steps.state import instance_lock
    from steps.veth import remove_shared

    with instance_lock(instance):
        if ipam.load(inst):
            return
        with nl.iproute() as ipr:
            remove_shared(ipr, inst)
        if not inst.network_name.startswith("?"):  # a network named by its table only has no leases dir we know
            ipam.save(inst, {})


def delete_link(instance, link: str) -> None:
    from steps import netlink as nl

    prefixes = tuple(veth_prefix(i) for i in [instance, *user_networks(instance).values()])
    if link.startswith(prefixes) or any(f.where == link for f in half_made_bridge(instance)):
        with nl.iproute() as ipr:
            nl.tolerate(nl.GONE, ipr.link, "del", ifname=link)


def remove_volume(instance, name: str) -> None:
    """volume_store's removal, under the instance lock a volume is made under, once it is
    still half made (or without its _data) there."""
    from steps.state import instance_lock
    from steps.storage import volume_store

    with instance_lock(instance):
        recs, _ = records(instance)
        if any(f.where == volume_store.volume_dir(instance, name) for f in volume_findings(instance, recs)):
            volume_store.remove(instance, name)


def remove_cgroup_parent(instance, path: str) -> None:
    """rmdir: an empty cgroup only (one with a process or a child refuses it)."""
    if os.path.basename(path) == os.path.basename(instance.cgroup_parent) and os.path.isdir(path):
        os.rmdir(path)


def remove_temp(path: str) -> None:
    from steps.state import remove_file

    remove_file(path)


def fix_store(instance) -> None:
    """Under Store.lock() (the instance lock; taking it removes the work dirs and temp files of
    dead processes): names of missing records, records missing layers that no container uses;
    and while no pull or import runs (Store.quiet()), unused layers, staged layers and blobs -
    remove_unused keeping every record, as image prune."""
    from steps.image.store import Store

    store = Store(instance)
    recs, _ = records(instance)
    users = {r.get("image_id") for r in recs.values()} | {r.get("image") for r in recs.values()}
    with store.lock(), store.quiet() as idle:
        broken = set()
        if idle:
            broken = {r["id"] for r in store.records() if r["id"] not in users and not store.complete(r)}
        for ref, image_id in sorted(store.index().items()):
            if image_id in broken or store.image(image_id) is None:
                store.untag(ref)
        for image_id in broken:
            os.unlink(store.record_path(image_id))
        if idle:
            store.remove_unused({r["id"] for r in store.records()}, work=True)
        else:
            store.remove_dangling_links()
