"""The lifecycle commands: run, start, stop, rm, teardown, and one step alone."""
from __future__ import annotations

import os
import signal

from steps import EXIT_NOT_FOUND, BadInput, DiyError, config
from steps import spec as specs
from steps.cli.containers import (
    Output,
    existing,
    facts,
    names_for,
    refuse_restarting,
    restarting,
    running_pid,
    settled,
    stop_orphan,
    unused_name,
    user_stops,
    wait_for_monitor,
)
from steps.exhaustion import doing
from steps.names import Names
from steps.pipeline import Context, Engine
from steps.report import Reporter
from steps.runtime.stdio import check_terminal
from steps.spec import RunOptions
from steps.state import load_record, now_iso, remove_empty, save_record, update_record


def run(opts: RunOptions, out: Output) -> int:
    names = Names(config.load(), opts.name if opts.name is not None else unused_name())
    spec = specs.build(names.container, opts)
    check_terminal(opts.tty, opts.interactive, opts.detach)
    reporter = out.reporter(attached=not opts.detach)
    if opts.name is None:
        reporter.message(f"name: {names.container}")
    ctx = Context(names.instance, names, spec, attach=not opts.detach)
    if out.check:
        Engine(ctx, reporter, check_only=True, pipeline="run").run("run")
        reporter.recap(names.container, "run (check)")
        return 0
    precheck(ctx)  # everything that can be refused is refused before anything is made
    with settled(names):
        created = adopt_or_create(ctx)
        try:
            Engine(ctx, reporter, rollback=out.rollback, pipeline="run").run("run")
        except DiyError:
            if created and out.rollback:
                forget(ctx, reporter)
            raise
        finally:
            reporter.recap(names.container, "run")
    if opts.detach:
        print(ctx.spec.get("id") or names.container, flush=True)  # Docker prints the ID: `id=$(run -d ...)`
        return 0
    return wait(ctx, reporter, remove=opts.rm)


def create(opts: RunOptions, out: Output) -> int:
    """Record a container and make its image ready; `start` runs it (docker create)."""
    names = Names(config.load(), opts.name if opts.name is not None else unused_name())
    spec = specs.build(names.container, opts)
    reporter = out.reporter(attached=False)
    ctx = Context(names.instance, names, spec, attach=False)
    if out.check:
        Engine(ctx, reporter, check_only=True, pipeline="create").run("create")
        return 0
    if load_record(names) is not None:
        raise DiyError(f"the container name {names.container} is already in use; remove it "
                       f"(invoke rm {names.container}) or choose another --name")
    precheck(ctx)
    with settled(names):
        record_new(ctx)
        try:
            Engine(ctx, reporter, rollback=out.rollback, pipeline="create").run("create")
        except DiyError:
            if out.rollback:
                forget(ctx, reporter)
            raise
        finally:
            reporter.recap(names.container, "create")
    print(ctx.spec["id"], flush=True)
    return 0


def kill(ref: str, signal_name: str | None) -> int:
    """Send a signal to the container's init (SIGKILL by default); the monitor records the exit."""
    from steps.runtime.signals import parse_signal

    signo = parse_signal(signal_name or "KILL")
    names = names_for(ref)
    existing(names)
    pid = running_pid(names, with_monitor=False)
    if pid is None:
        raise DiyError(f"cannot kill container {names.container}: it is not running")
    from steps.launch import thaw_container

    if signo in (signal.SIGKILL, signal.SIGTERM):
        user_stops(names)  # as docker kill: the restart policy does not bring it back
    thaw_container(names.cgroup_path)
    try:
        os.kill(pid, signo)
    except ProcessLookupError:
        raise DiyError(f"cannot kill container {names.container}: it is not running") from None
    return 0


def restart(ref: str, timeout: int | None, out: Output) -> int:
    """stop (if it runs), then start: docker restart."""
    names = names_for(ref)
    existing(names)
    if running_pid(names, with_monitor=False) or restarting(names):
        stop(names.container, timeout, out)
    return start(names.container, False, out)


def precheck(ctx: Context) -> None:
    """Refuse what can be refused from facts alone: the image, the command, the name's spec.
    A missing image is pulled first, as `docker run` does: a failed pull makes no container."""
    from steps.image import ensure_image, is_builtin
    from steps.image.store import Store

    store = Store(ctx.instance)
    if not is_builtin(ctx.spec["image"]) and store.resolve(ctx.spec["image"]) is None:
        ensure_image(store, ctx.spec["image"])  # (the built-in busybox is built by the image step)
    old = load_record(ctx.names)
    if old is None:
        check_command(ctx)
    else:
        check_same(old, ctx)
    from steps import network

    for name in network.joined(ctx.spec):
        from steps.networks import variant

        network.check_bridge_possible(variant(ctx.instance, name))  # "no such network: NAME" first
    if network.joined(ctx.spec):
        network.check_ports_free(ctx.names, ctx.spec["publish"])


def check_same(old: dict, ctx: Context) -> None:
    if not specs.same(old, ctx.spec):
        name = ctx.names.container
        changed = ", ".join(specs.differences(old, ctx.spec))
        raise BadInput(f"container {name} already exists with a different {changed}; "
                       f"remove it (invoke rm {name}) or choose another --name")


def record_new(ctx: Context) -> None:
    """A new container's record, with what is settled at create: -P's host ports, --cidfile."""
    from steps.ports import assign
    from steps.runflags import write_cidfile

    assign(ctx)
    write_cidfile(ctx.spec.get("cidfile"), ctx.spec["id"])
    try:
        with doing(f"recording container {ctx.names.container}", ctx.names.container_dir):
            save_record(ctx.names, ctx.spec)
    except BaseException:  # nothing half-made: not the cidfile, not an empty container directory
        from steps.runflags import remove_cidfile

        remove_cidfile(ctx.spec.get("cidfile"), ctx.spec["id"])
        remove_empty(ctx.names.container_dir)
        raise


def adopt_or_create(ctx: Context) -> bool:
    """Resume a half-made container of the same spec, or record a new one. True if new."""
    old = load_record(ctx.names)
    name = ctx.names.container
    if old is None:
        record_new(ctx)
        return True
    check_same(old, ctx)
    ctx.spec = old
    if pid := running_pid(ctx.names):
        raise DiyError(f"container {name} is already running (pid {pid})")
    if old.get("last", {}).get("finished_at"):
        raise DiyError(f"container {name} already exists and has exited; "
                       f"start it again (invoke start {name}) or remove it (invoke rm {name})")
    stop_orphan(ctx)
    return False


def check_command(ctx: Context) -> None:
    """Refuse a command the image does not have before anything is made."""
    from steps.image import missing_command

    argv0 = missing_command(ctx.instance, ctx.spec)
    if argv0 is not None:
        raise DiyError(f"{argv0}: command not found in image {ctx.spec['image']}", EXIT_NOT_FOUND)


def forget(ctx: Context, reporter: Reporter) -> None:
    """Remove the record (and --cidfile) this failed run wrote, so the host is as it was."""
    from steps.runflags import remove_cidfile

    remove_cidfile(ctx.spec.get("cidfile"), ctx.spec.get("id", ""))
    ctx.spec["remove_volumes"] = True  # the anonymous volumes it made go with it (named ones stay)
    engine = Engine(ctx, reporter, pipeline="rollback")
    try:
        engine.one(engine.step("teardown"), "apply")
    except Exception:  # noqa: BLE001 - the original error is the one to report
        pass


def wait(ctx: Context, reporter: Reporter, remove: bool) -> int:
    """Foreground: wait for the container, then undo its runtime steps."""
    code = ctx.monitor.wait()
    return ctx.monitor.finish(code, reporter, remove=remove)


def start(name: str, attach: bool, out: Output) -> int:
    names = names_for(name)
    reporter = out.reporter(attached=attach)
    existing(names)
    with settled(names, out.check):
        ctx = Context(names.instance, names, existing(names), attach=attach)
        refuse_restarting(names, "start")
        if (pid := running_pid(names)) and attach:
            raise DiyError(f"container {name} is already running (pid {pid}); see its output with "
                           f"invoke attach {name}")
        if pid:  # as docker start: already where it was asked to be
            reporter.message(f"container {name} is running already (pid {pid})")
            return 0
        from steps import network

        if network.joined(ctx.spec):
            network.check_ports_free(names, ctx.spec.get("publish") or [])
        if not out.check:
            stop_orphan(ctx)
        try:
            Engine(ctx, reporter, check_only=out.check, rollback=out.rollback, pipeline="start").run("start")
        finally:
            reporter.recap(name, "start")
    if attach and not out.check:
        return wait(ctx, reporter, remove=ctx.spec.get("rm", False))
    return 0


def stop(name: str, timeout: int | None, out: Output) -> int:
    names = names_for(name)
    reporter = out.reporter(attached=False)
    existing(names)
    if not out.check:
        user_stops(names)
    with settled(names, out.check):
        ctx = Context(names.instance, names, existing(names))
        if timeout is not None:
            ctx.spec["stop_timeout"] = timeout
        rt, _, monitor_alive = facts(names)
        try:
            Engine(ctx, reporter, check_only=out.check, pipeline="stop").run("stop")
        finally:
            reporter.recap(name, "stop")
        if rt and not monitor_alive and not out.check:  # nobody else will record the exit
            update_record(names, finished_at=now_iso(), exit_code=None)
    if not out.check:
        wait_for_monitor(rt if monitor_alive else None)
    return 0


def remove(name: str, out: Output, record: dict | None, pipeline: str) -> dict | None:
    """The rm pipeline, then wait for a monitor that still has to notice."""
    names = names_for(name)
    reporter = out.reporter(attached=False)
    ctx = Context(names.instance, names, record or {"name": name})
    rt, _, monitor_alive = facts(names)
    try:
        Engine(ctx, reporter, check_only=out.check, pipeline=pipeline).run("rm")
    finally:
        reporter.recap(name, pipeline)
    return rt if monitor_alive else None


def rm(name: str, force: bool, out: Output, volumes: bool = False) -> int:
    """Remove a container; with volumes (rm -v) its anonymous volumes too."""
    names = names_for(name)
    existing(names)
    if force and not out.check:
        user_stops(names, removing=True)
    with settled(names, out.check):
        record = existing(names)
        if not force:
            refuse_restarting(names, "remove")
        if (pid := running_pid(names, with_monitor=False)) and not force:
            raise DiyError(f"container {name} is running (pid {pid}); stop it first or use --force")
        monitor = remove(name, out, {**record, "remove_volumes": True} if volumes else record, "rm")
    if not out.check:
        wait_for_monitor(monitor)
    return 0


def leftover_spec(names: Names) -> dict:
    """What teardown of a name without a record undoes: the default network, and every user
    network the name still holds a lease on (a run killed before its record... or after rm)."""
    from steps import ipam

    held = [net or "bridge" for net, leases in ipam.anywhere(names.instance).items() if names.container in leases]
    return {"name": names.container, "networks": sorted(set(held) | {"bridge"}, key=lambda n: n != "bridge")}


def teardown(name: str, out: Output) -> int:
    """Roll everything back, whatever state the container is in; needs no record."""
    names = names_for(name)
    if not out.check:
        user_stops(names, removing=True)
    with settled(names, out.check):
        monitor = remove(name, out, load_record(names) or leftover_spec(names), "teardown")
    if not out.check:
        wait_for_monitor(monitor)
    return 0


def one_step(stage: str, name: str, undo: bool, out: Output) -> int:
    """Check, apply or undo one stage alone, while debugging."""
    names = names_for(name)
    reporter = out.reporter(attached=False)
    if not undo:
        existing(names)
    with settled(names, out.check):
        record = load_record(names)
        if record is None and not undo:
            raise DiyError(f"no such container: {name}; create it with invoke run first")
        ctx = Context(names.instance, names, record or {"name": name}, attach=False)
        engine = Engine(ctx, reporter, check_only=out.check, pipeline=f"step.{stage}")
        try:
            engine.one(engine.step(stage), "undo" if undo else "apply")
        finally:
            reporter.recap(name, f"step.{stage}")
    return 0
