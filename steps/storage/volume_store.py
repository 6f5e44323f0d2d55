"""Named volumes: STATE_ROOT/volumes/<name>/ holds _data/ (what containers see) and meta.json.

A volume outlives its containers; only `volume rm`, `volume prune`, `rm -v` and `run --rm`
(anonymous ones) remove it. Which containers use a volume is read from their records, so
there is no second list to keep in step.
"""
from __future__ import annotations

import os
import secrets
import shutil

from steps import DiyError
from steps.state import now_iso, private_dir, read_json, write_json


def check_volume_name(name: str) -> str:
    from steps.names import check_name

    return check_name("volume", name, 128, ", e.g. pgdata")


def valid_name(name: str) -> bool:
    from steps.names import is_name

    return is_name(name, 128)


def anonymous_name() -> str:
    return secrets.token_hex(32)


def volumes_root(instance) -> str:
    return os.path.join(instance.state_root, "volumes")


def volume_dir(instance, name: str) -> str:
    return os.path.join(volumes_root(instance), check_volume_name(name))


def data_dir(instance, name: str) -> str:
    """The directory containers see: what -v NAME:/path binds."""
    return os.path.join(volume_dir(instance, name), "_data")


def meta_path(instance, name: str) -> str:
    return os.path.join(volume_dir(instance, name), "meta.json")


def get(instance, name: str) -> dict | None:
    """The volume's metadata, or None when there is no such volume."""
    return read_json(meta_path(instance, name))


def create(instance, name: str, labels: dict | None = None, anonymous: bool = False) -> tuple[dict, bool]:
    """Make the volume unless it exists; (its metadata, True when made now). Safe to repeat:
    _data is made before the metadata, so a volume with metadata is complete."""
    old = get(instance, name)
    if old is not None:
        return old, False
    private_dir(volumes_root(instance))
    os.makedirs(volume_dir(instance, name), 0o700, exist_ok=True)
    os.makedirs(data_dir(instance, name), 0o755, exist_ok=True)
    meta = {"name": name, "created": now_iso(), "labels": dict(labels or {}), "driver": "local",
            "mountpoint": data_dir(instance, name), "anonymous": bool(anonymous)}
    write_json(meta_path(instance, name), meta)
    return meta, True


def names(instance) -> list[str]:
    root = volumes_root(instance)
    found = sorted(os.listdir(root)) if os.path.isdir(root) else []
    return [n for n in found if valid_name(n) and os.path.exists(meta_path(instance, n))]


def volume_entries(record: dict) -> list[dict]:
    """The entries of a container record's "volumes" that are named volumes."""
    return [v for v in record.get("volumes") or [] if v.get("type") == "volume"]


def users(instance, name: str, but: str | None = None) -> list[str]:
    """The containers (other than `but`) whose record mounts the volume."""
    from steps.names import containers_dir

    root = containers_dir(instance)
    out = []
    for container in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        if container == but:
            continue
        try:
            record = read_json(os.path.join(root, container, "info.json")) or {}
        except DiyError:
            continue
        if any(v.get("name") == name for v in volume_entries(record)):
            out.append(container)
    return out


def size_of(path: str) -> int:
    from steps.facts import tree_size

    return tree_size(path)


def remove(instance, name: str) -> int:
    """Delete the volume and its data (the caller checked nobody uses it); bytes freed.
    Refused while anything is mounted below it: rmtree would cross into that mount."""
    from steps.facts import mounts_at, mounts_below

    path = volume_dir(instance, name)
    busy = mounts_below(path) + mounts_at(path)
    if busy:
        raise DiyError(f"cannot remove volume {name}: {busy[0].mount_point} is still mounted")
    freed = size_of(data_dir(instance, name))
    # metadata first: a volume without it is no volume, so a kill midway leaves no half-volume listed
    try:
        os.unlink(meta_path(instance, name))
    except FileNotFoundError:
        pass
    shutil.rmtree(path, ignore_errors=True)
    return freed


def removable(instance, name: str, but: str | None = None) -> None:
    """Refuse, Docker's way, to remove a volume a container uses."""
    if get(instance, name) is None:
        raise DiyError(f"no such volume: {name}")
    if used := users(instance, name, but):
        raise DiyError(f"cannot remove volume {name}: volume is in use - [{', '.join(used)}]")


def anonymous_of(instance, record: dict) -> list[str]:
    """The anonymous volumes of a container that no other container uses (rm -v, run --rm)."""
    own = record.get("name")
    return [v["name"] for v in volume_entries(record)
            if v.get("anonymous") and get(instance, v["name"]) is not None
            and not users(instance, v["name"], but=own)]


def human_size(n: int) -> str:
    """Docker's units: 0B, 12kB, 3.5MB (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{n}B"
        n /= 1000
    return f"{n}B"
