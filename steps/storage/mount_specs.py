"""`--mount` (Docker's key=value syntax) and `--tmpfs PATH[:OPTS]`, validated into the spec's
"volumes" entries (bind, volume or tmpfs) before anything is made."""
from __future__ import annotations

import os
import re

from steps import BadInput

MOUNT_EXAMPLE = "e.g. type=volume,source=data,target=/data or type=tmpfs,target=/run,tmpfs-size=64m"
# Docker's defaults for a tmpfs (moby daemon/oci_linux.go); OPTS may turn them around.
TMPFS_DEFAULT_FLAGS = ("nodev", "noexec", "nosuid")
# mount(8) words that are flags, each with the word it cancels
TMPFS_FLAGS = {"ro": "rw", "rw": "ro", "exec": "noexec", "noexec": "exec", "suid": "nosuid", "nosuid": "suid",
               "dev": "nodev", "nodev": "dev", "noatime": "atime", "atime": "noatime",
               "nodiratime": "", "relatime": "", "strictatime": ""}
TMPFS_DATA = {"size": r"[0-9]+[kKmMgG%]?", "mode": r"[0-7]{1,4}", "uid": r"[0-9]{1,10}",
              "gid": r"[0-9]{1,10}", "nr_inodes": r"[0-9]+[kKmMgG]?", "nr_blocks": r"[0-9]+[kKmMgG]?"}
_BYTES = re.compile(r"^([0-9]+)([kmgt]?)b?$", re.IGNORECASE)
_KEYS = {"type": "type", "source": "source", "src": "source", "target": "target", "destination": "target",
         "dst": "target", "readonly": "readonly", "ro": "readonly", "volume-nocopy": "nocopy",
         "tmpfs-size": "tmpfs-size", "tmpfs-mode": "tmpfs-mode", "bind-propagation": "bind-propagation",
         "consistency": "consistency", "volume-driver": "volume-driver"}


def check_target(target: str, what: str) -> str:
    """An absolute path inside the container, not /, without '..'."""
    if not target or not target.startswith("/"):
        raise BadInput(f"bad {what}: target {target!r} must be an absolute path, e.g. /data")
    if ".." in target.split("/") or "\0" in target or "\n" in target:
        raise BadInput(f"bad {what}: target {target!r} must not contain '..'")
    target = os.path.normpath(target)
    if target == "/":
        raise BadInput(f"bad {what}: the target cannot be / (the container's root)")
    return target


def bind_entry(source: str, target: str, ro: bool, what: str) -> dict:
    if not os.path.isabs(source):
        raise BadInput(f"bad {what}: source {source!r} must be an absolute path")
    if ".." in source.split("/") or "\0" in source or "\n" in source:
        raise BadInput(f"bad {what}: source {source!r} must not contain '..'")
    target = check_target(target, what)
    if not os.path.exists(source):
        raise BadInput(f"bad {what}: source {source} does not exist on the host")
    return {"type": "bind", "source": os.path.realpath(source), "target": target, "ro": ro}


def volume_entry(instance, name: str | None, target: str, ro: bool, what: str, nocopy: bool = False) -> dict:
    """A named volume (name given) or an anonymous one (a new 64-hex name)."""
    from steps import config
    from steps.storage.volume_store import anonymous_name, data_dir, valid_name

    if name is not None and not valid_name(name):
        raise BadInput(f"bad {what}: volume name {name!r}: use letters, digits, '_', '.', '-' "
                       "(starting with a letter or digit), or an absolute host path for a bind")
    target = check_target(target, what)
    vol = name or anonymous_name()
    entry = {"type": "volume", "name": vol, "source": data_dir(instance or config.load(), vol),
             "target": target, "ro": ro, "anonymous": name is None}
    return {**entry, "nocopy": True} if nocopy else entry


def parse_tmpfs(spec: str) -> dict:
    """`PATH[:OPTS]` -> a tmpfs entry; OPTS are mount(8) words from an allowlist."""
    path, _, opts = (spec or "").partition(":")
    what = f"tmpfs {spec!r}"
    return tmpfs_entry(check_target(path, what), opts.split(",") if opts else [], what)


def tmpfs_entry(target: str, words: list[str], what: str) -> dict:
    flags, data = set(TMPFS_DEFAULT_FLAGS), {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq and key in TMPFS_FLAGS:
            flags.discard(TMPFS_FLAGS[key])
            flags.add(key)
        elif eq and key in TMPFS_DATA and re.fullmatch(TMPFS_DATA[key], value):
            data[key] = value
        else:
            raise BadInput(f"bad {what}: option {word!r} is not one of {', '.join(sorted(TMPFS_FLAGS))}, "
                           f"or {'=, '.join(TMPFS_DATA)}= with a number, e.g. /run:size=64m,mode=1777")
    ro = "ro" in flags
    flags -= {"ro", "rw", "exec", "suid", "dev", "atime"}
    return {"type": "tmpfs", "target": target, "ro": ro,
            "options": ",".join(f"{k}={v}" for k, v in data.items()), "flags": sorted(flags)}


def parse_bytes(text: str, what: str) -> int:
    m = _BYTES.fullmatch(text or "")
    if not m:
        raise BadInput(f"bad {what}: tmpfs-size {text!r} must be bytes or a number with k, m, g, e.g. 64m")
    return int(m[1]) * 1024 ** ("kmgt".index(m[2].lower()) + 1) if m[2] else int(m[1])


def parse_bool(key: str, value: str | None, what: str) -> bool:
    if value in (None, "", "true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise BadInput(f"bad {what}: {key}={value!r} must be true or false, e.g. {key}=true")


def split_mount(spec: str) -> dict[str, str | None]:
    """'k=v,k2,...' -> {canonical key: value or None}; unknown or repeated keys refused."""
    what = f"mount {spec!r}"
    fields: dict[str, str | None] = {}
    for item in (spec or "").split(","):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if key not in _KEYS:
            raise BadInput(f"bad {what}: unknown key {key!r}; keys are type, source, target, readonly, "
                           f"volume-nocopy, tmpfs-size, tmpfs-mode, {MOUNT_EXAMPLE}")
        if _KEYS[key] in fields:
            raise BadInput(f"bad {what}: {key} is given twice; {MOUNT_EXAMPLE}")
        fields[_KEYS[key]] = value if eq else None
    return fields


def parse_mount(spec: str, instance) -> dict:
    """Docker's --mount into a bind, volume or tmpfs entry."""
    what = f"mount {spec!r}"
    f = split_mount(spec)
    kind = f.get("type") or "volume"  # Docker's default type
    if kind not in ("bind", "volume", "tmpfs"):
        raise BadInput(f"bad {what}: type {kind!r} must be bind, volume or tmpfs, {MOUNT_EXAMPLE}")
    if "target" not in f:
        raise BadInput(f"bad {what}: target is missing, {MOUNT_EXAMPLE}")
    target = check_target(f["target"] or "", what)
    ro = parse_bool("readonly", f["readonly"], what) if "readonly" in f else False
    if f.get("volume-driver") not in (None, "local"):
        raise BadInput(f"bad {what}: volume-driver {f['volume-driver']!r}: only local is supported")
    if f.get("bind-propagation") not in (None, "rprivate"):
        raise BadInput(f"bad {what}: bind-propagation {f['bind-propagation']!r}: only rprivate is supported "
                       "(a container's mounts never propagate to the host)")
    only = {"bind": {"bind-propagation"}, "volume": {"nocopy", "volume-driver"}, "tmpfs": {"tmpfs-size", "tmpfs-mode"}}
    for key in set().union(*only.values()) - only[kind]:
        if key in f:
            raise BadInput(f"bad {what}: {key} does not apply to type={kind}, {MOUNT_EXAMPLE}")
    if kind == "tmpfs":
        return tmpfs_from_mount(f, target, ro, what)
    if kind == "bind":
        if not f.get("source"):
            raise BadInput(f"bad {what}: a bind needs source=/host/path, e.g. type=bind,source=/srv,target=/srv")
        return bind_entry(f["source"], target, ro, what)
    nocopy = parse_bool("volume-nocopy", f["nocopy"], what) if "nocopy" in f else False
    return volume_entry(instance, f.get("source") or None, target, ro, what, nocopy)


def tmpfs_from_mount(f: dict, target: str, ro: bool, what: str) -> dict:
    if f.get("source"):
        raise BadInput(f"bad {what}: a tmpfs has no source, e.g. type=tmpfs,target=/run")
    words = ["ro"] if ro else []
    if "tmpfs-size" in f:
        words.append(f"size={parse_bytes(f['tmpfs-size'] or '', what)}")
    if "tmpfs-mode" in f:
        if not re.fullmatch(r"[0-7]{1,4}", f["tmpfs-mode"] or ""):
            raise BadInput(f"bad {what}: tmpfs-mode {f['tmpfs-mode']!r} must be octal, e.g. tmpfs-mode=1770")
        words.append(f"mode={f['tmpfs-mode']}")
    return tmpfs_entry(target, words, what)

