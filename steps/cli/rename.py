"""`rename`: a stopped or created container takes a new name.

Its cgroup, host veth, netns pin, lease and nft entries are all derived from the name
(steps/names.py), so a running container is refused: renaming it would strand those objects
under the old name. A stopped one has none of them left; what carries the name is its state
directory (record, upper layer, logs, journal), the record's "name" and its lock file.
"""
from __future__ import annotations

import os

from steps import BadInput, DiyError, config
from steps.names import Names, check_container_name
from steps.state import container_lock, find_container, journal, load_record, save_record


def leftovers(names: Names) -> list[str]:
    """What still exists under the old name besides the state directory (a running or
    half-stopped container): mounts under it, its runtime directory, its cgroups."""
    from steps.cgroup import cgroup_dirs
    from steps.facts import mounts_at, mounts_below

    found = [m.mount_point for m in mounts_at(names.merged) + mounts_below(names.container_dir)]
    if os.path.isdir(names.runtime_dir) and os.listdir(names.runtime_dir):
        found.append(names.runtime_dir)  # (an empty one is what a stop leaves)
    found += [d for _, d in cgroup_dirs(names.cgroup_path) if os.path.isdir(d)]
    return found


def rename(ref: str, new_name: str) -> int:
    instance = config.load()
    try:
        check_container_name(new_name)
    except BadInput:
        raise BadInput(f"bad new name {new_name!r}: use 1-64 letters, digits, '_', '.', '-', "
                       "starting with a letter or digit, e.g. web-2") from None
    old = find_container(instance, ref)
    if load_record(old) is None:
        raise DiyError(f"no such container: {ref}")
    new = Names(instance, new_name)
    if new.container == old.container:
        raise BadInput(f"bad new name {new_name!r}: the container is already called that")
    order = sorted([old, new], key=lambda n: n.container)  # one order: no deadlock
    locks = []
    try:
        for n in order:
            locks.append(container_lock(n).acquire())
        move(old, new)
    finally:
        for n, lock in zip(order, locks):
            if not os.path.isdir(n.container_dir):
                lock.remove()  # no container of this name (now): waiters retry on a new file
            lock.release()
    return 0


def move(old: Names, new: Names) -> None:
    """Under both locks: refuse a running one or a taken name, then move the state directory."""
    from steps.launch import runtime_facts

    record = load_record(old)
    if record is None:
        raise DiyError(f"no such container: {old.container}")
    _, init_alive, monitor_alive = runtime_facts(old)
    if init_alive or monitor_alive:
        raise DiyError(f"cannot rename {old.container}: it is running (its cgroup, veth, netns and nft "
                       f"entries carry its name); stop it first")
    if left := leftovers(old):
        raise DiyError(f"cannot rename {old.container}: {left[0]} still exists; stop or teardown it first")
    if os.path.exists(new.container_dir) or os.path.exists(new.runtime_dir):
        raise BadInput(f"bad new name {new.container!r}: a container of that name exists; choose another")
    # The record first, then the directory (one rename): a kill in between leaves the container
    # under its old name with the new name recorded, and a second rename finishes the job.
    save_record(old, {**record, "name": new.container})
    os.rename(old.container_dir, new.container_dir)
    try:
        os.rmdir(old.runtime_dir)
    except FileNotFoundError:
        pass
    journal(new, {"pipeline": "rename", "step": "rename", "action": "apply", "result": "changed",
                  "detail": f"{old.container} -> {new.container}"})
