"""`compose` (both faces): a Compose file converged idempotently - up (with --check and --diff),
down, ps, logs, exec, restart, stop, start, config. The plan is steps/compose/plan.py's, carried
out by steps/cli/converge.py; each item is reported as a step is (ok / changed / would change),
with a recap, or as one JSON object (--json) that the Ansible module reads."""
from __future__ import annotations

import contextlib
import json
import sys
import time

from steps import DiyError, config
from steps.cli.containers import Output
from steps.compose.plan import Item, project_containers
from steps.report import CHANGED, FAILED, OK, PLANNED, Result

UP, DOWN = "compose up", "compose down"


def load(files: list[str] | None, project_name: str | None) -> dict:
    from steps.compose.load import load as load_file

    return load_file(list(files or []) or None, project_name)


def stack_lock(instance, project: str):
    """One up/down of a project at a time."""
    import os

    from steps.state import Lock

    return Lock(os.path.join(instance.run_root, "locks", "compose", f"{project}.lock"), f"project {project}",
                instance.lock_timeout)


def forget_lock(lock) -> None:
    """The project is gone: its lock file (a waiter locks a new one), and their directory when empty."""
    import os

    lock.remove()
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(lock.path))


def summary(item: Item) -> str:
    text = item.action + (f" ({item.detail})" if item.detail else "")
    if item.diff:
        text += ": " + "; ".join(f"{k}: {short(v['before'])} -> {short(v['after'])}" for k, v in item.diff.items())
    return text


def short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


class StackReport:
    """The stack's items as the engine reports steps; with --json one object at the end."""

    def __init__(self, out: Output, project: str, command: str, as_json: bool, shown: bool = False):
        from steps.report import Reporter

        self.project, self.command, self.as_json = project, command, as_json
        self.reporter = out.reporter(attached=False)
        if as_json:
            self.reporter = Reporter(quiet=True)
        elif shown and self.reporter.quiet:  # a plan asked for (--check, --diff) is shown on Docker's face too
            self.reporter = Reporter()
        self.items: list[tuple[Item, str]] = []

    def item(self, item: Item, status: str, ms: int) -> None:
        self.items.append((item, status))
        self.reporter.step(Result(self.project, self.command, f"{item.kind} {item.name}", "apply", status,
                                  summary(item), ms))

    def finish(self, check: bool, diff: bool) -> None:
        changed = sum(1 for _, s in self.items if s in (CHANGED, PLANNED))
        if self.as_json:
            print(json.dumps({"project": self.project, "changed": bool(changed), "ok": len(self.items) - changed,
                              "changed_count": changed, "check": check,
                              "plan": [i.as_json() for i, _ in self.items]}, indent=2))
            return
        if diff:
            for item, _ in self.items:
                if item.diff:
                    print(f"--- {item.kind} {item.name} (before)\n+++ {item.kind} {item.name} (after)")
                    for key, v in item.diff.items():
                        print(f"-{key}: {json.dumps(v['before'], sort_keys=True)}")
                        print(f"+{key}: {json.dumps(v['after'], sort_keys=True)}")
        self.reporter.recap(self.project, self.command + (" (check)" if check else ""))


def run_items(instance, project: dict, items: list[Item], report: StackReport, check: bool, act) -> None:
    from steps.cli.converge import journal

    for item in items:
        start = time.monotonic()
        if check or not item.changes:
            report.item(item, PLANNED if item.changes else OK, 0)
            continue
        try:
            act(item)
        except BaseException:
            ms = int((time.monotonic() - start) * 1000)
            journal(instance, project["name"], report.command, item, FAILED, ms)
            report.item(item, FAILED, ms)
            raise
        ms = int((time.monotonic() - start) * 1000)
        journal(instance, project["name"], report.command, item, CHANGED, ms)
        report.item(item, CHANGED, ms)


def validate(project: dict, items: list[Item]) -> None:
    """Every container to make, checked as `run` checks its flags, before anything is made."""
    from steps import spec as specs
    from steps.compose.convert import container_name
    from steps.compose.plan import run_options_for

    for item in items:
        if item.kind == "service" and item.action in ("create", "recreate"):
            specs.build(container_name(project, item.name), run_options_for(project, item.name))


def up(files, project_name, services, detach: bool, check: bool, diff: bool, as_json: bool,
       remove_orphans: bool, out: Output) -> int:
    from steps.cli.converge import do_up
    from steps.compose.plan import up_plan

    instance = config.load()
    project = load(files, project_name)
    with contextlib.nullcontext() if check else stack_lock(instance, project["name"]) as lock:
        try:
            items = up_plan(instance, project, list(services or []) or None, remove_orphans)
            validate(project, items)
            report = StackReport(out, project["name"], UP, as_json, shown=check or diff)
            try:
                run_items(instance, project, items, report, check, lambda item: do_up(instance, project, item))
            finally:
                report.finish(check, diff)
        except BaseException:
            if lock is not None and not made_anything(instance, project):
                forget_lock(lock)  # a refused up leaves the host as it was: not even its lock file
            raise
    if detach or check or as_json:
        return 0
    return attached(instance, project, [i.name for i in items if i.kind == "service" and i.action != "remove"])


def attached(instance, project: dict, services: list[str]) -> int:
    """`up` without -d: the services' output, prefixed, until they all end; Ctrl-C stops them."""
    try:
        follow_logs(instance, project, services, follow=True)
    except KeyboardInterrupt:
        print("Gracefully stopping... (press Ctrl+C again to force)", file=sys.stderr)
        stop_services(None, project["name"], services, None, project=project)
        return 130
    return 0


def made_anything(instance, project: dict) -> bool:
    """Whether any container or network of the project exists."""
    from steps import networks

    def ours(name: str) -> bool:
        rec = networks.record(instance, name)
        return rec is not None and (rec.get("labels") or {}).get("com.docker.compose.project") == project["name"]

    return bool(project_containers(instance, project["name"])) or any(
        ours(n["name"]) for n in project["networks"].values() if not n["external"])


def down(files, project_name, volumes: bool, check: bool, as_json: bool, out: Output) -> int:
    from steps.cli.converge import do_down, forget_journal
    from steps.compose.plan import down_plan

    instance = config.load()
    project = load(files, project_name)
    with contextlib.nullcontext() if check else stack_lock(instance, project["name"]) as lock:
        items = down_plan(instance, project, volumes)
        report = StackReport(out, project["name"], DOWN, as_json, shown=check)
        try:
            run_items(instance, project, items, report, check,
                      lambda item: do_down(instance, project, item, volumes))
        finally:
            report.finish(check, False)
        if not check:
            forget_journal(instance, project["name"])
            forget_lock(lock)
    return 0


def containers_of(project: dict, services: list[str] | None) -> list[tuple[str, object, dict]]:
    """(service, names, record) of the project's containers, in dependency order."""
    have = project_containers(config.load(), project["name"])
    order = [s for s in project["order"] if s in have] + sorted(set(have) - set(project["order"]))
    if services:
        missing = [s for s in services if s not in project["services"]]
        if missing:
            raise DiyError(f"no such service: {missing[0]} (the project has {', '.join(project['services'])})")
        order = [s for s in order if s in services]
    return [(s, *have[s]) for s in order]


def ps(files, project_name, as_json: bool) -> int:
    from steps.views import state_of

    project = load(files, project_name)
    rows = []
    for service, names, record in containers_of(project, None):
        state = state_of(names, record)
        health = health_of(names)
        rows.append({"Name": names.container, "Service": service, "Image": record.get("image", ""),
                     "State": state["state"], "Health": health,
                     "Ports": ", ".join(f"{p['host_ip']}:{p['host_port']}->{p['container_port']}/{p['proto']}"
                                        for p in record.get("publish") or [])})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'NAME':<30}{'SERVICE':<16}{'STATUS':<28}PORTS")
    for r in rows:
        status = r["State"] + (f" ({r['Health']})" if r["Health"] else "")
        print(f"{r['Name']:<30}{r['Service']:<16}{status:<28}{r['Ports']}")
    return 0


def health_of(names) -> str:
    from steps.runtime.health import status

    return status(names) or ""


def follow_logs(instance, project: dict, services: list[str] | None, follow: bool) -> None:
    """Each container's log, its lines prefixed with the service, as docker compose logs."""
    from steps.cli.logview import Watch
    from steps.runtime.logfile import parse, recorded

    chosen = containers_of(project, services)
    width = max((len(s) for s, _, _ in chosen), default=0)
    tails = []
    for service, names, _ in chosen:
        watch = Watch(names) if follow else None
        records, follower = recorded(names.log, None, None, None, follow)
        emit(service, width, records)
        tails.append((service, watch, follower))
    try:
        while follow and tails:
            for entry in list(tails):
                service, watch, follower = entry
                finished = watch.gone()
                emit(service, width, [parse(line) for line in follower.lines()])
                if finished:
                    follower.close()
                    tails.remove(entry)
            time.sleep(0.1)
    finally:
        for _, _, follower in tails:
            follower.close()


def emit(service: str, width: int, records) -> None:
    for stream, _, data in records:
        out = sys.stderr if stream == "stderr" else sys.stdout
        out.write(f"{service:<{width}} | {data.decode(errors='replace').rstrip(chr(10))}\n")
        out.flush()


def logs(files, project_name, services, follow: bool) -> int:
    project = load(files, project_name)
    try:
        follow_logs(config.load(), project, list(services or []) or None, follow)
    except KeyboardInterrupt:
        return 130
    return 0


def exec_in(files, project_name, service: str, command: list[str], interactive: bool, tty: bool,
            env: list[str], user: str | None, workdir: str | None, detach: bool) -> int:
    from steps.runtime.exec import ExecOptions
    from steps.runtime.exec import exec_in as run_exec

    project = load(files, project_name)
    found = containers_of(project, [service])
    if not found:
        raise DiyError(f"service {service} has no container: run compose up first")
    code, _ = run_exec(ExecOptions(name=found[0][1].container, command=command, detach=detach,
                                   interactive=interactive, tty=tty, env=env or [], user=user, workdir=workdir))
    return code


def stop_services(files, project_name, services, timeout, project: dict | None = None) -> int:
    from steps.cli import lifecycle
    from steps.cli.converge import Quiet, quietly

    project = project or load(files, project_name)
    for service, names, _ in reversed(containers_of(project, list(services or []) or None)):
        grace = project["services"].get(service, {}).get("stop_grace_period") if timeout is None else timeout
        quietly(lifecycle.stop, names.container, None if grace is None else int(grace), Quiet())
    return 0


def start_services(files, project_name, services) -> int:
    from steps.cli import lifecycle
    from steps.cli.converge import Quiet, quietly
    from steps.views import state_of

    project = load(files, project_name)
    for _, names, record in containers_of(project, list(services or []) or None):
        if not state_of(names, record)["state"].startswith("running"):
            quietly(lifecycle.start, names.container, False, Quiet())
    return 0


def restart_services(files, project_name, services, timeout) -> int:
    stop_services(files, project_name, services, timeout)
    return start_services(files, project_name, services)


def show_config(files, project_name) -> int:
    from steps.compose.convert import dump

    print(dump(load(files, project_name)), end="")
    return 0
