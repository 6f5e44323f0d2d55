"""The lifecycle commands: run, start, stop, rm, teardown, and one step alone."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from steps import EXIT_NOT_FOUND, BadInput, DiyError, config
from steps import spec as specs
from steps.names import Names, generate_name
from steps.pipeline import Context, Engine
from steps.report import Reporter
from steps.state import container_lock, load_record, now_iso, save_record, update_record


@dataclass
class Output:
    as_json: bool = False
    check: bool = False
    rollback: bool = True

    def reporter(self, attached: bool) -> Reporter:
        """Reports go to stderr while the container owns stdout."""
        return Reporter(stream=sys.stderr if attached else sys.stdout, as_json=self.as_json)


@dataclass
class RunOptions:
    name: str | None
    image: str
    command: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    workdir: str | None = None
    hostname: str | None = None
    volumes: list[str] = field(default_factory=list)
    memory: str | None = None
    cpus: str | None = None
    pids_limit: int | None = None
    rm: bool = False
    detach: bool = False


def names_for(name: str) -> Names:
    return Names(config.load(), name)


def existing(names: Names) -> dict:
    record = load_record(names)
    if record is None:
        raise DiyError(f"no such container: {names.container} (see invoke ps)")
    return record


def running(ctx: Context) -> int | None:
    """The init's pid when the container runs under a live monitor."""
    from steps.launch import runtime_facts

    rt, init_alive, monitor_alive = runtime_facts(ctx.names)
    return rt["init_pid"] if init_alive and monitor_alive else None


def run(opts: RunOptions, out: Output) -> int:
    names = names_for(generate_name() if opts.name is None else opts.name)
    spec = specs.build(names.container, opts.image, opts.command, opts.env, opts.workdir,
                       opts.hostname, opts.volumes, opts.memory, opts.cpus, opts.pids_limit, opts.rm)
    reporter = out.reporter(attached=not opts.detach)
    if opts.name is None:
        reporter.message(f"name: {names.container}")
    ctx = Context(names.instance, names, spec, attach=not opts.detach,
                  tty=not opts.detach and os.isatty(0))
    if out.check:
        Engine(ctx, reporter, check_only=True, pipeline="run").run("run")
        reporter.recap(names.container, "run (check)")
        return 0
    precheck(ctx)  # everything that can be refused is refused before anything is made
    with container_lock(names) as lock:
        created = adopt_or_create(ctx)
        try:
            Engine(ctx, reporter, rollback=out.rollback, pipeline="run").run("run")
        except DiyError:
            if created and out.rollback:
                forget(ctx, reporter, lock)
            reporter.recap(names.container, "run")
            raise
    reporter.recap(names.container, "run")
    if opts.detach:
        print(names.container)
        return 0
    return wait(ctx, reporter, remove=opts.rm)


def precheck(ctx: Context) -> None:
    """Refuse what can be refused from facts alone: the image, the command, the name's spec."""
    from steps.image import canonical, is_builtin
    from steps.image.store import Store

    ref = canonical(ctx.spec["image"])
    if Store(ctx.instance).resolve(ref) is None and not is_builtin(ref):
        raise BadInput(f"image {ref} is not in the local store; "
                       f"import it first: invoke image.import FILE --name {ref}")
    old = load_record(ctx.names)
    if old is None:
        check_command(ctx)
    elif not specs.same(old, ctx.spec):
        name = ctx.names.container
        changed = ", ".join(specs.differences(old, ctx.spec))
        raise BadInput(f"container {name} already exists with a different {changed}; "
                       f"remove it (invoke rm {name}) or choose another --name")


def adopt_or_create(ctx: Context) -> bool:
    """Resume a half-made container of the same spec, or record a new one. True if new."""
    old = load_record(ctx.names)
    name = ctx.names.container
    if old is None:
        check_command(ctx)
        save_record(ctx.names, ctx.spec)
        return True
    if not specs.same(old, ctx.spec):
        changed = ", ".join(specs.differences(old, ctx.spec))
        raise BadInput(f"container {name} already exists with a different {changed}; "
                       f"remove it (invoke rm {name}) or choose another --name")
    ctx.spec = old
    if pid := running(ctx):
        raise DiyError(f"container {name} is already running (pid {pid})")
    if old.get("last", {}).get("finished_at"):
        raise DiyError(f"container {name} already exists and has exited; "
                       f"start it again (invoke start {name}) or remove it (invoke rm {name})")
    return False


def check_command(ctx: Context) -> None:
    """Refuse a command the image does not have before anything is made."""
    from steps.image import canonical
    from steps.image.store import Store

    argv = ctx.spec.get("command")
    store = Store(ctx.instance)
    record = store.resolve(canonical(ctx.spec["image"]))
    if not argv or record is None:
        return
    if not specs.command_exists(store.lower_dirs(record), argv[0], ctx.spec["env"]):
        raise DiyError(f"{argv[0]}: command not found in image {ctx.spec['image']}", EXIT_NOT_FOUND)


def forget(ctx: Context, reporter: Reporter, lock) -> None:
    """Remove the record this failed run wrote, so the host is as it was."""
    engine = Engine(ctx, reporter, pipeline="rollback")
    try:
        engine.one(engine.step("teardown"), "apply")
        lock.remove()
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
    with container_lock(names):
        ctx = Context(names.instance, names, existing(names), attach=attach, tty=attach and os.isatty(0))
        if pid := running(ctx):
            raise DiyError(f"container {name} is already running (pid {pid})")
        engine = Engine(ctx, reporter, check_only=out.check, rollback=out.rollback, pipeline="start")
        try:
            engine.run("start")
        finally:
            reporter.recap(name, "start")
    if attach and not out.check:
        return wait(ctx, reporter, remove=ctx.spec.get("rm", False))
    return 0


def stop(name: str, timeout: int | None, out: Output) -> int:
    from steps.launch import runtime_facts

    names = names_for(name)
    reporter = out.reporter(attached=False)
    existing(names)
    with container_lock(names):
        ctx = Context(names.instance, names, existing(names))
        if timeout is not None:
            ctx.spec["stop_timeout"] = timeout
        rt, _, monitor_alive = runtime_facts(names)
        try:
            Engine(ctx, reporter, check_only=out.check, pipeline="stop").run("stop")
        finally:
            reporter.recap(name, "stop")
        if rt and not monitor_alive and not out.check:
            update_record(names, finished_at=now_iso(), exit_code=None)
    if not out.check:
        wait_for_monitor(rt if monitor_alive else None)
    return 0


def live_monitor(names: Names) -> dict | None:
    """The runtime state when a monitor still lives for this container."""
    from steps.launch import runtime_facts

    rt, _, monitor_alive = runtime_facts(names)
    return rt if monitor_alive else None


def wait_for_monitor(rt: dict | None, timeout: float = 30) -> None:
    """Let a monitor finish its clean-up (it needs the lock we just released)."""
    from steps.facts import process_alive

    if rt is None or rt.get("monitor_pid") == os.getpid():
        return
    deadline = time.monotonic() + timeout
    while process_alive(rt["monitor_pid"], rt["monitor_start"]) and time.monotonic() < deadline:
        time.sleep(0.02)


def rm(name: str, force: bool, out: Output) -> int:
    names = names_for(name)
    reporter = out.reporter(attached=False)
    existing(names)
    with container_lock(names) as lock:
        ctx = Context(names.instance, names, existing(names))
        monitor = live_monitor(names)
        if (pid := running(ctx)) and not force:
            raise DiyError(f"container {name} is running (pid {pid}); stop it first or use --force")
        try:
            Engine(ctx, reporter, check_only=out.check, pipeline="rm").run("rm")
        finally:
            reporter.recap(name, "rm")
        if not out.check:
            lock.remove()
    if not out.check:
        wait_for_monitor(monitor)
    return 0


def teardown(name: str, out: Output) -> int:
    """Roll everything back, whatever state the container is in; needs no record."""
    names = names_for(name)
    reporter = out.reporter(attached=False)
    with container_lock(names) as lock:
        ctx = Context(names.instance, names, load_record(names) or {"name": name})
        monitor = live_monitor(names)
        try:
            Engine(ctx, reporter, check_only=out.check, pipeline="teardown").run("rm")
        finally:
            reporter.recap(name, "teardown")
        if not out.check:
            lock.remove()
    if not out.check:
        wait_for_monitor(monitor)
    return 0


def one_step(stage: str, name: str, undo: bool, out: Output) -> int:
    """Check, apply or undo one stage alone, while debugging."""
    names = names_for(name)
    reporter = out.reporter(attached=False)
    if not undo:
        existing(names)
    with container_lock(names):
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
