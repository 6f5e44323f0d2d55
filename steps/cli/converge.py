"""Carrying out a plan (steps.compose.plan) with the container pipelines of the rest of the tool:
networks and volumes first, then the services in dependency order - each waiting for what its
depends_on asks (started, healthy, completed successfully) - and for `down` the reverse. Every
item done is written to the project's journal (STATE_ROOT/compose/PROJECT.jsonl).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import time

from steps import DiyError
from steps.cli.containers import Output
from steps.compose.plan import Item, project_containers, run_options_for
from steps.report import Reporter
from steps.state import now_iso

HEALTH_WAIT = 300.0  # at most, for a dependency to become healthy or to complete


class Quiet(Output):
    """The containers' own pipelines report only a failure: the stack's lines are the report."""

    def reporter(self, attached: bool) -> Reporter:
        return Reporter(quiet=True)


def journal(instance, project: str, command: str, item: Item, result: str, ms: int) -> None:
    path = os.path.join(instance.state_root, "compose", f"{project}.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    line = {"time": now_iso(), "command": command, "kind": item.kind, "name": item.name, "action": item.action,
            "result": result, "ms": ms}
    with open(path, "a") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")


def forget_journal(instance, project: str) -> None:
    path = os.path.join(instance.state_root, "compose", f"{project}.jsonl")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))


def quietly(fn, *args, **kwargs):
    """fn with its stdout (the container ID `run -d` prints) kept to itself."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


# --- up --------------------------------------------------------------------------------------

def make_network(instance, project: dict, item: Item) -> None:
    from steps import networks
    from steps.network import joined
    from steps.state import instance_lock

    conf = next(c for c in project["networks"].values() if c["name"] == item.name)
    labels = {"com.docker.compose.project": project["name"], "com.docker.compose.network": item.name,
              **conf.get("labels", {})}
    if item.action == "recreate":  # its containers go first (their config hash covers the network: each is
        for names, record in project_containers(instance, project["name"]).values():  # recreated after)
            if item.name in joined(record):
                remove_container(names.container, None)
    with instance_lock(instance):
        if item.action == "recreate":
            networks.remove(instance, item.name)  # refused (in one line) while another container joins it
        if networks.record(instance, item.name) is None:
            networks.create(instance, item.name, conf.get("subnet"), labels)


def make_volume(instance, project: dict, item: Item) -> None:
    from steps.storage import volume_store

    conf = next(c for c in project["volumes"].values() if c["name"] == item.name)
    volume_store.create(instance, item.name, {"com.docker.compose.project": project["name"],
                                              "com.docker.compose.volume": item.name, **conf.get("labels", {})})


def remove_container(name: str, grace: float | None, volumes: bool = False) -> None:
    from steps.cli import lifecycle

    quietly(lifecycle.stop, name, None if grace is None else int(grace), Quiet())
    quietly(lifecycle.rm, name, True, Quiet(), volumes=volumes)


def run_service(instance, project: dict, item: Item) -> None:
    """create / recreate / start one service's container (detached)."""
    from steps.cli import lifecycle

    have = project_containers(instance, project["name"]).get(item.name)
    grace = project["services"][item.name]["stop_grace_period"]
    if have is not None and item.action == "recreate":
        remove_container(have[0].container, grace)
        have = None
    if have is not None and item.action == "start":
        last = have[1].get("last") or {}
        if last.get("started_at") or last.get("finished_at"):
            quietly(lifecycle.start, have[0].container, False, Quiet())
            return
    opts = run_options_for(project, item.name)._replace(detach=True)
    quietly(lifecycle.run, opts, Quiet())  # a half-made one of the same spec is taken up (resumed)


def wait_for(instance, project: dict, service: str) -> None:
    """What service's depends_on asks of each dependency, before service starts."""
    for dep, rule in project["services"][service]["depends_on"].items():
        cond = rule["condition"]
        have = project_containers(instance, project["name"]).get(dep)
        if have is None:
            if rule.get("required", True):
                raise DiyError(f"service {service} depends on {dep}, which has no container")
            continue
        if cond == "service_healthy":
            from steps.runtime.health import wait_healthy

            status = wait_healthy(have[0], HEALTH_WAIT)
            if status != "healthy":
                raise DiyError(f"service {service} waits for {dep} to be healthy, and it is {status}")
        elif cond == "service_completed_successfully":
            code = wait_exit(have[0], HEALTH_WAIT)
            if code != 0:
                raise DiyError(f"service {service} waits for {dep} to complete successfully, and it exited {code}")


def wait_exit(names, timeout: float):
    from steps.state import load_record
    from steps.views import state_of

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = load_record(names) or {}
        state = state_of(names, record)["state"]
        if state.startswith("exited"):
            return (record.get("last") or {}).get("exit_code")
        time.sleep(0.1)
    return "still running"


def do_up(instance, project: dict, item: Item) -> None:
    if item.kind == "network":
        make_network(instance, project, item)
    elif item.kind == "volume":
        make_volume(instance, project, item)
    elif item.action == "remove":  # an orphan, with --remove-orphans
        have = project_containers(instance, project["name"]).get(item.name)
        if have is not None:
            remove_container(have[0].container, None)
    else:
        wait_for(instance, project, item.name)
        run_service(instance, project, item)


# --- down ------------------------------------------------------------------------------------

def do_down(instance, project: dict, item: Item, volumes: bool) -> None:
    if item.kind == "service":
        have = project_containers(instance, project["name"]).get(item.name)
        grace = (project["services"].get(item.name) or {}).get("stop_grace_period")
        if have is not None:
            remove_container(have[0].container, grace, volumes)
    elif item.kind == "network":
        from steps import networks
        from steps.state import instance_lock

        with instance_lock(instance):
            if networks.record(instance, item.name) is not None:
                networks.remove(instance, item.name)
    else:
        from steps.state import instance_lock
        from steps.storage import volume_store

        with instance_lock(instance):
            if volume_store.get(instance, item.name) is not None:
                volume_store.remove(instance, item.name)
