"""The step contract, for every stage, on real mounts, cgroups and processes:
check -> apply -> check (applied) -> apply (no-op) -> undo -> undo (no-op)."""
from __future__ import annotations

import os

import pytest

from steps import config, stage_classes
from steps import spec as specs
from steps.cli.containers import wait_for_monitor
from steps.facts import mounts_at, mounts_below, process_alive
from steps.names import Names
from steps.pipeline import Context
from steps.state import container_lock, load_runtime, save_record


def make_ctx(name: str, **flags) -> Context:
    instance = config.load()
    spec = specs.build(name, specs.RunOptions(name=name, image="busybox", command=["/bin/sleep", "1000"],
                                              **flags))
    names = Names(instance, name)
    os.makedirs(names.container_dir, exist_ok=True)
    save_record(names, spec)
    return Context(instance, names, spec, attach=False)


def steps_for(ctx, *stages):
    classes = stage_classes()
    return [classes[s](ctx) for s in stages]


def contract(step, fact):
    """fact() -> a hashable picture of what the step manages on the host."""
    first = step.check()
    assert not first.applied and first.changes, first
    step.apply()
    assert step.check().applied
    picture = fact()
    step.apply()
    assert step.check().applied and fact() == picture, "a second apply changed something"
    step.undo()
    assert step.check().absent
    gone = fact()
    step.undo()
    assert step.check().absent and fact() == gone


def test_image(inst):
    ctx = make_ctx("c-image")
    [image] = steps_for(ctx, "image")
    store = os.path.join(inst.state_root, "images")
    first = image.check()
    assert not first.applied
    image.apply()
    assert image.check().applied
    listing = sorted(os.listdir(os.path.join(store, "layers")))
    image.apply()
    assert sorted(os.listdir(os.path.join(store, "layers"))) == listing
    assert not image.undoable  # images outlive containers
    steps_for(ctx, "teardown")[0].apply()


def test_layers(inst):
    ctx = make_ctx("c-layers")
    image, layers, teardown = steps_for(ctx, "image", "layers", "teardown")
    image.apply()
    contract(layers, lambda: tuple(m.mount_point for m in mounts_at(ctx.names.merged)))
    assert os.path.isdir(ctx.names.upper)  # undo keeps the container's changes
    teardown.apply()


def test_volumes(inst, tmp_path):
    src = tmp_path / "v"
    src.mkdir()
    ctx = make_ctx("c-vol", volume=[f"{src}:/data:ro", f"{src}:/deep/er/rw"])
    image, layers, volumes, teardown = steps_for(ctx, "image", "layers", "volumes", "teardown")
    image.apply()
    layers.apply()
    contract(volumes, lambda: tuple(sorted(m.mount_point for m in mounts_below(ctx.names.merged))))
    layers.undo()
    teardown.apply()


def test_volumes_named_and_tmpfs(inst, tmp_path):
    """The new kinds of mounts: a named volume (made and filled on first apply), an anonymous
    one, a tmpfs; undo unmounts them all and keeps the volumes' data."""
    from steps.storage import volume_store

    ctx = make_ctx("c-kinds", volume=["named:/etc", "/anon"], mount=["type=tmpfs,target=/t,tmpfs-size=1m"],
                   tmpfs=["/run:size=1m"])
    image, layers, volumes, teardown = steps_for(ctx, "image", "layers", "volumes", "teardown")
    image.apply()
    layers.apply()
    contract(volumes, lambda: tuple(sorted((m.mount_point, m.fstype) for m in mounts_below(ctx.names.merged))))
    assert os.path.exists(os.path.join(volume_store.data_dir(ctx.instance, "named"), "passwd"))  # filled
    layers.undo()
    ctx.spec["remove_volumes"] = True  # rm -v: the anonymous volume goes, the named one stays
    teardown.apply()
    assert teardown.check().applied
    assert volume_store.names(ctx.instance) == ["named"]
    volume_store.remove(ctx.instance, "named")


def test_cgroup(inst):
    from steps.cgroup import cgroup_dirs

    ctx = make_ctx("c-cg", memory="64M", cpus="0.5", pids_limit=32)
    [cgroup, teardown] = steps_for(ctx, "cgroup", "teardown")

    def fact():
        out = []
        for _, d in cgroup_dirs(ctx.names.cgroup_path):
            files = sorted(os.listdir(d)) if os.path.isdir(d) else []
            limits = [open(os.path.join(d, f)).read() for f in files
                      if f in ("memory.limit_in_bytes", "memory.max", "cpu.cfs_quota_us", "cpu.max", "pids.max")]
            out.append((d, os.path.isdir(d), tuple(limits)))
        return tuple(out)

    contract(cgroup, fact)
    teardown.apply()


def test_launch(inst):
    ctx = make_ctx("c-launch")
    image, layers, volumes, cgroup, launch, teardown = steps_for(
        ctx, "image", "layers", "volumes", "cgroup", "launch", "teardown")
    for s in (image, layers, volumes, cgroup):
        s.apply()

    def fact():
        rt = load_runtime(ctx.names)
        return (rt or {}).get("init_pid"), bool(rt) and process_alive(rt["init_pid"], rt["init_start"])

    monitors = []

    def fact_and_monitor():
        rt = load_runtime(ctx.names)
        if rt:
            monitors.append(rt)
        return fact()

    contract(launch, fact_and_monitor)
    for rt in monitors:  # the detached monitor records the exit under the lock, then leaves
        wait_for_monitor(rt)
    for s in (cgroup, volumes, layers):
        s.undo()
    teardown.apply()
    with container_lock(ctx.names) as lock:
        lock.remove()


def test_teardown_refuses_with_a_mount_inside(inst, tmp_path):
    src = tmp_path / "precious"
    src.mkdir()
    (src / "keep").write_text("x")
    ctx = make_ctx("c-td", volume=[f"{src}:/data"])
    image, layers, volumes, teardown = steps_for(ctx, "image", "layers", "volumes", "teardown")
    for s in (image, layers, volumes):
        s.apply()
    with pytest.raises(Exception, match="still mounted"):
        teardown.apply()
    assert (src / "keep").exists()  # rmtree never reached the volume's files
    volumes.undo()
    layers.undo()
    teardown.apply()
    assert teardown.check().applied and (src / "keep").exists()


def test_veth(inst):
    from steps import ipam
    from steps.veth import pinned

    ctx = make_ctx("c-veth")
    veth, teardown = steps_for(ctx, "veth", "teardown")

    def fact():
        links = os.listdir("/sys/class/net")
        return (pinned(ctx.names.netns), ipam.load(ctx.instance).get("c-veth"), ctx.names.host_veth in links,
                inst.bridge in links)

    contract(veth, fact)
    assert fact() == (False, None, False, False)  # the last container: the bridge went too
    teardown.apply()


def test_nat(inst):
    from steps.nat import live_comments

    ctx = make_ctx("c-nat", publish=["18090:80", "127.0.0.1:18091:81/udp"])
    veth, nat, teardown = steps_for(ctx, "veth", "nat", "teardown")
    veth.apply()
    contract(nat, lambda: live_comments(inst.nft_table))
    assert live_comments(inst.nft_table) is None
    veth.undo()
    teardown.apply()
