"""The init's plan: everything PID 1 needs, worked out by the monitor before the fork.

The init itself imports little and decides nothing: the image config, the user, the
environment, the confinement (capabilities as a mask, the seccomp program compiled or
taken from the cache) and the cgroup mounts are all settled here, where an error is
still a clean one-line failure.
"""
from __future__ import annotations

import os

from steps.facts import own_permitted
from steps.profiles import defaults
from steps.runflags import DEFAULT_SHM, INIT_PATH, TINI
from steps.runtime import profile as profiles


def build(ctx) -> dict:
    from steps.image import container_config
    from steps.runtime.command import command_argv, container_env, resolve_user
    from steps.veth import pinned

    spec, n = ctx.spec, ctx.names
    config = container_config(ctx.instance, spec)
    asked = spec.get("user") or config.get("User")
    user = resolve_user(n.merged, asked or "0")  # root's groups come from the image, never the caller's
    host_net = spec.get("network") == "host"
    if host_net:
        write_host_etc(ctx)
    etc = {f"/etc/{f}": os.path.join(n.etc_dir, f) for f in ("hosts", "hostname", "resolv.conf")
           if os.path.exists(os.path.join(n.etc_dir, f))}
    tty = bool(spec.get("tty"))
    init = TINI if spec.get("init") else None
    hostname = spec.get("hostname") or (os.uname().nodename if host_net else n.container)  # Docker's, for host
    return {"cgroup": n.cgroup_path, "rootfs": n.merged, "etc": etc,
            "netns": n.netns if pinned(n.netns) else None, "host_network": host_net,
            "hostname": hostname,
            "workdir": spec.get("workdir") or config.get("WorkingDir") or "/", "tty": tty,
            "argv": ([INIT_PATH, "--"] if init else []) + command_argv(spec, config), "user": user,
            "init": init, "shm_size": spec.get("shm_size") or DEFAULT_SHM,
            "dev_volumes": [v for v in spec.get("volumes") or [] if v["target"].startswith("/dev/")],
            "read_only": bool(spec.get("read_only")),
            "env": container_env({**spec, "hostname": hostname}, tty, config, user["home"] if asked else "/root"),
            **confinement(ctx), "rlimits": rlimits(spec)}


def rlimits(spec: dict) -> dict[str, list[int]]:
    """The profile's defaults, then --ulimit (its names as setrlimit(2) spells them)."""
    asked = {f"RLIMIT_{u['name'].upper()}": [u["soft"], u["hard"]] for u in spec.get("ulimits") or []}
    return {**defaults()["rlimits"], **asked}


def write_host_etc(ctx) -> None:
    """--network host: copies of the host's hosts and resolv.conf (a container must not write the
    host's own), kept in the container's directory like the bridge's rendered ones."""
    from steps.network import host_etc_files, write_in_place

    os.makedirs(ctx.names.etc_dir, exist_ok=True)
    for name, text in host_etc_files(ctx.instance, ctx.spec).items():
        write_in_place(os.path.join(ctx.names.etc_dir, name), text)


def confinement(ctx) -> dict:
    """The security profile in the init's terms."""
    from steps.names import seccomp_cache

    p = profiles.resolve(ctx.spec)
    source = p.seccomp_source
    program = None
    if source is not None:
        from steps.runtime.seccomp import program as compiled

        tightening = defaults()["seccomp_default_tightening"] if p.seccomp == "default" else None
        program = compiled(source, frozenset(f"CAP_{c}" for c in p.caps), seccomp_cache(ctx.instance), tightening)
    return {"privileged": p.privileged, "caps": profiles.cap_mask(p.caps) & own_permitted(),
            "last_cap": profiles.kernel_last_cap(), "seccomp": program,
            "no_new_privileges": p.no_new_privileges, "masked_paths": p.masked_paths,
            "readonly_paths": p.readonly_paths, "rlimits": defaults()["rlimits"],
            "cgroup_mounts": cgroup_mounts()}


def cgroup_mounts() -> list[dict]:
    """What the container mounts at /sys/fs/cgroup: the unified hierarchy alone on a pure v2
    host, else one mount per hierarchy, named as on the host."""
    from steps.facts import cgroup_hierarchies

    found = cgroup_hierarchies()
    if len(found) == 1 and found[0].version == 2:
        return [{"fstype": "cgroup2", "dir": "", "data": None}]
    return [{"fstype": "cgroup2" if h.version == 2 else "cgroup", "dir": os.path.basename(h.root),
             "data": None if h.version == 2 else ",".join(sorted(h.controllers)) or h.name}
            for h in found]
