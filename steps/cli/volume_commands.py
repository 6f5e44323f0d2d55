"""`volume create|ls|inspect|rm|prune`, with Docker's output shapes."""
from __future__ import annotations

import json
import sys

from steps import BadInput, DiyError, config
from steps.storage import volume_store as store


def parse_labels(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, _, value = (item or "").partition("=")
        if not key or "\0" in item or "\n" in item:
            raise BadInput(f"bad label {item!r}: expected KEY=VALUE, e.g. com.example.team=db")
        out[key] = value
    return out


def create(name: str | None, labels: list[str] | None) -> int:
    """Make a volume (a 64-hex name when none is given); an existing one is fine, as Docker."""
    instance = config.load()
    wanted = parse_labels(labels)
    name = store.check_volume_name(name) if name else store.anonymous_name()
    with volumes_lock(instance):
        meta, made = store.create(instance, name, wanted)
    if not made and wanted and meta.get("labels") != wanted:
        raise DiyError(f"cannot create volume {name}: it exists with other labels "
                       f"({', '.join(f'{k}={v}' for k, v in sorted(meta['labels'].items())) or 'none'})")
    if not made:
        print(f"volume {name} exists already", file=sys.stderr)
    print(name)
    return 0


def volumes_lock(instance):
    """The instance lock: create, rm and prune do not interleave."""
    from steps.state import instance_lock

    return instance_lock(instance)


def docker_shape(meta: dict) -> dict:
    return {"CreatedAt": meta.get("created"), "Driver": meta.get("driver", "local"),
            "Labels": meta.get("labels") or None, "Mountpoint": meta.get("mountpoint"),
            "Name": meta["name"], "Options": None, "Scope": "local"}


def ls(quiet: bool, as_json: bool) -> int:
    instance = config.load()
    metas = [m for m in (store.get(instance, n) for n in store.names(instance)) if m]
    if quiet:
        for m in metas:
            print(m["name"])
    elif as_json:
        print(json.dumps([docker_shape(m) for m in metas], indent=2))
    else:
        print(f"{'DRIVER':<10}VOLUME NAME")
        for m in metas:
            print(f"{m.get('driver', 'local'):<10}{m['name']}")
    return 0


def inspect(name: str) -> int:
    instance = config.load()
    meta = store.get(instance, store.check_volume_name(name))
    if meta is None:
        raise DiyError(f"no such volume: {name}")
    print(json.dumps([docker_shape(meta)], indent=2))
    return 0


def rm(name: str, force: bool) -> int:
    """Refused while a container's record uses it (also with --force, as Docker); --force
    only makes an unknown volume no error."""
    instance = config.load()
    store.check_volume_name(name)
    with volumes_lock(instance):
        if force and store.get(instance, name) is None:
            return 0
        store.removable(instance, name)
        store.remove(instance, name)
    print(name)
    return 0


def prune_unused(instance, all_volumes: bool) -> tuple[list[str], int]:
    """Remove the anonymous volumes no container uses (all_volumes: named ones too): (names, bytes)."""
    removed, freed = [], 0
    with volumes_lock(instance):
        for name in store.names(instance):
            meta = store.get(instance, name) or {}
            if (meta.get("anonymous") or all_volumes) and not store.users(instance, name):
                freed += store.remove(instance, name)
                removed.append(name)
    return removed, freed


def prune(all_volumes: bool) -> int:
    """Unused anonymous volumes (and with --all unused named ones too), as `docker volume prune`."""
    removed, freed = prune_unused(config.load(), all_volumes)
    if removed:
        print("Deleted Volumes:")
        print("\n".join(removed))
        print()
    print(f"Total reclaimed space: {store.human_size(freed)}")
    return 0
