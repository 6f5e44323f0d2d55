"""Read-only views: ps, inspect, images, logs."""
from __future__ import annotations

import calendar
import json
import os
import shlex
import sys
import time

from steps import DiyError, config
from steps.names import Names, containers_dir
from steps.state import load_record


def state_of(names: Names, record: dict) -> dict:
    from steps.launch import runtime_facts

    rt, init_alive, monitor_alive = runtime_facts(names)
    last = record.get("last") or {}
    if init_alive:
        state = "running" if monitor_alive else "running (monitor lost)"
        return {"state": state, "pid": rt["init_pid"]}
    if rt is not None and last.get("finished_at") is None:
        from steps.facts import boot_id

        why = "stopped by a reboot" if rt.get("boot_id") != boot_id() else "stopped (killed)"
        return {"state": why, "pid": None}
    if last.get("finished_at"):
        code = last.get("exit_code")
        state = f"exited ({'?' if code is None else code})"
        if last.get("oom_killed"):
            state += " OOM-killed"
        return {"state": state, "pid": None, "exit_code": code, "oom_killed": bool(last.get("oom_killed"))}
    return {"state": "created", "pid": None}


def ago(stamp: str | None) -> str:
    if not stamp:
        return "-"
    seconds = time.time() - calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return f"{int(seconds)} seconds ago"


def containers() -> list[tuple[Names, dict]]:
    instance = config.load()
    root = containers_dir(instance)
    found = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        if not valid_name(name):
            continue  # not ours: something else wrote into the containers directory
        names = Names(instance, name)
        record = load_record(names)
        if record is not None:
            found.append((names, record))
    return found


def valid_name(name: str) -> bool:
    from steps import BadInput
    from steps.names import check_container_name

    try:
        check_container_name(name)
        return True
    except BadInput:
        return False


def ps(as_json: bool) -> int:
    rows = []
    for names, record in containers():
        state = state_of(names, record)
        argv = record.get("command") or ["(image default)"]
        rows.append({"name": names.container, "image": record["image"], **state,
                     "created": record.get("created"), "command": argv})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [("NAME", "IMAGE", "STATE", "PID", "CREATED", "COMMAND")]
    for r in rows:
        cmd = shlex.join(r["command"])
        table.append((r["name"], r["image"], r["state"], str(r["pid"] or "-"), ago(r["created"]),
                      cmd if len(cmd) <= 40 else cmd[:37] + "..."))
    widths = [max(len(row[i]) for row in table) for i in range(6)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def inspect(name: str) -> int:
    names = Names(config.load(), name)
    record = load_record(names)
    if record is None:
        raise DiyError(f"no such container: {name} (see invoke ps)")
    from steps.runtime.profile import resolve
    from steps.state import load_runtime

    print(json.dumps({**record, "state": state_of(names, record), "runtime": load_runtime(names),
                      "security": resolve(record).describe(),
                      "paths": {"dir": names.container_dir, "merged": names.merged,
                                "cgroup": names.cgroup_path}}, indent=2, sort_keys=True))
    return 0


def logs(name: str) -> int:
    names = Names(config.load(), name)
    if load_record(names) is None:
        raise DiyError(f"no such container: {name} (see invoke ps)")
    try:
        with open(names.log, "rb") as f:
            sys.stdout.buffer.write(f.read())
    except FileNotFoundError:
        pass  # never started detached: its output went to the terminal
    return 0


def images(as_json: bool) -> int:
    from steps.image.store import Store

    store = Store(config.load())
    users: dict[str, list[str]] = {}
    for names, record in containers():
        users.setdefault(record.get("image_id") or "", []).append(names.container)
        users.setdefault(record["image"], []).append(names.container)
    rows = []
    for ref, image_id in sorted(store.index().items()):
        name, _, tag = ref.partition("@") if "@" in ref else ref.rpartition(":")
        image = store.image(image_id) or {}
        size = sum(du(store.layer_dir(d)) for d in image.get("layers", []))
        used = sorted(set(users.get(image_id, []) + users.get(ref, [])))
        rows.append({"name": name, "tag": tag, "id": image_id, "size": size,
                     "created": image.get("created"), "containers": used})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'NAME':<24} {'TAG':<10} {'ID':<14} {'SIZE':>9}  {'CREATED':<16} CONTAINERS")
    for r in rows:
        print(f"{r['name']:<24} {r['tag']:<10} {r['id'][7:19]:<14} {r['size'] / 1e6:>7.1f}MB  "
              f"{ago(r['created']):<16} {','.join(r['containers']) or '-'}")
    return 0


def du(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total
