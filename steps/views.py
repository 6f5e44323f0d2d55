"""What the read-only views (ps, inspect, stats) share: the instance's containers, a container's
state from facts, its ID, and the runtime config of the image it was made from."""
from __future__ import annotations

import hashlib
import os

from steps import DiyError, config
from steps.names import Names, containers_dir, is_name
from steps.state import load_record


def state_of(names: Names, record: dict) -> dict:
    from steps.launch import runtime_facts

    rt, init_alive, monitor_alive = runtime_facts(names)
    last = record.get("last") or {}
    if init_alive:
        state = "running" if monitor_alive else "running (monitor lost)"
        return {"state": state, "pid": rt["init_pid"]}
    if monitor_alive and last.get("restarting"):  # a restart policy's back-off (steps/runtime/restart.py)
        code = last.get("exit_code")
        return {"state": f"restarting ({'?' if code is None else code})", "pid": None, "exit_code": code,
                "oom_killed": bool(last.get("oom_killed"))}
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


def containers() -> list[tuple[Names, dict]]:
    instance = config.load()
    root = containers_dir(instance)
    found = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        if not is_name(name):
            continue  # not ours: something else wrote into the containers directory
        names = Names(instance, name)
        record = load_record(names)
        if record is not None:
            found.append((names, record))
    return found


def container_id(record: dict) -> str:
    """The 64-hex ID; a record made before IDs existed gets a stable one from its name."""
    cid = str(record.get("id") or "")
    return cid or hashlib.sha256(f"diy-docker container {record.get('name', '')}".encode()).hexdigest()


def image_config(record: dict) -> dict:
    """The runtime config (Entrypoint, Cmd, Env, ...) of the image the container was made from."""
    from steps.image import container_config

    try:
        return container_config(config.load(), record)
    except DiyError:  # a damaged image record: the listing goes on with Docker's defaults
        return {}
