"""`inspect`: a container in Docker's shape (docker inspect's JSON array, or --format), with the
diy-specific facts (state, runtime, security, paths) under "DiyDocker".

Keys the record does not have (older records, flags not given) read as Docker's defaults.
"""
from __future__ import annotations

import json

from steps import config
from steps.names import Names
from steps.state import existing_container
from steps.views import container_id, image_config, state_of

SHM_DEFAULT = 64 * 1024 * 1024  # Docker's /dev/shm


def status(names: Names, record: dict) -> dict:
    """Docker's State: created | running | restarting | exited, with its facts."""
    here = state_of(names, record)
    last = record.get("last") or {}
    running = str(here["state"]).startswith("running")
    name = "running" if running else "created" if here["state"] == "created" else "exited"
    if not running and last.get("restarting"):
        name = "restarting"
    code = last.get("exit_code")
    shape = {"Status": name, "Running": running, "Paused": False, "Restarting": name == "restarting",
            "OOMKilled": bool(last.get("oom_killed")), "Dead": False,
            "Pid": here.get("pid") or 0, "ExitCode": 0 if code is None or running else code,
            "Error": "", "StartedAt": last.get("started_at") or "0001-01-01T00:00:00Z",
            "FinishedAt": (last.get("finished_at") if not running else None) or "0001-01-01T00:00:00Z",
            "RestartCount": int(last.get("restart_count") or 0)}  # also top-level, where Docker has it
    from steps.runtime.health import current, docker_state

    health = current(names, here) if running else None
    if health:  # only while a check runs, as Docker's (an older record has none)
        shape["Health"] = docker_state(health)
    return shape


def merged_env(record: dict, image: dict) -> list[str]:
    """The image's Env under --env, PATH added when neither sets it (as Docker's daemon)."""
    from steps.runtime.command import DEFAULT_PATH

    env: dict[str, str] = {}
    for item in list(image.get("Env") or []) + list(record.get("env") or []):
        key, _, value = item.partition("=")
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    return [f"{k}={v}" for k, v in env.items()]


def port_key(p: dict) -> str:
    return f"{p['container_port']}/{p.get('proto', 'tcp')}"


def configuration(record: dict, image: dict) -> tuple[dict, list[str]]:
    from steps.runtime.command import command_argv

    entry = record["entrypoint"] if record.get("entrypoint") is not None else image.get("Entrypoint")
    cmd = record.get("command") or ([] if record.get("entrypoint") is not None else image.get("Cmd"))
    exposed = {k: {} for k in [*(image.get("ExposedPorts") or {}), *(record.get("expose") or [])]}
    exposed.update({port_key(p): {} for p in record.get("publish") or []})
    argv = command_argv(record, image)
    return {"Hostname": record.get("hostname") or record.get("name", ""), "Domainname": "",
            "User": record.get("user") or image.get("User") or "",
            "AttachStdin": False, "AttachStdout": not record.get("detach"), "AttachStderr": not record.get("detach"),
            "ExposedPorts": exposed or None, "Tty": bool(record.get("tty")),
            "OpenStdin": bool(record.get("interactive")), "StdinOnce": False,
            "Env": merged_env(record, image), "Cmd": cmd or None, "Image": record.get("image", ""),
            "Volumes": None, "WorkingDir": record.get("workdir") or image.get("WorkingDir") or "",
            "Entrypoint": entry or None, "OnBuild": None,
            "Labels": {**(image.get("Labels") or {}), **(record.get("labels") or {})},
            "StopSignal": record.get("stop_signal") or image.get("StopSignal") or "SIGTERM",
            **healthcheck(record, image)}, argv


def healthcheck(record: dict, image: dict) -> dict:
    """Config.Healthcheck: the flags merged with the image's, as Docker's daemon stores it."""
    from steps.runtime.health import docker_form, effective

    given = record.get("healthcheck")
    if given and given.get("test") == ["NONE"]:
        return {"Healthcheck": {"Test": ["NONE"]}}
    check = effective(given, image.get("Healthcheck"))
    return {"Healthcheck": docker_form(check)} if check else {}


def host_config(record: dict) -> dict:
    vols = record.get("volumes") or []
    binds = [f"{v.get('name') or v['source']}:{v['target']}{':ro' if v.get('ro') else ''}"
             for v in vols if v.get("type", "bind") in ("bind", "volume") and not v.get("anonymous")]
    restart = record.get("restart") or {}
    log_opts = record.get("log_opts") or {}
    return {"Binds": binds or None, "NetworkMode": record.get("network") or "bridge",
            "PortBindings": {port_key(p): [{"HostIp": "" if p["host_ip"] == "0.0.0.0" else p["host_ip"],
                                            "HostPort": str(p["host_port"])}]
                             for p in record.get("publish") or []},
            "RestartPolicy": {"Name": restart.get("name") or "no",
                              "MaximumRetryCount": int(restart.get("max_retries") or 0)},
            "AutoRemove": bool(record.get("rm")), "CapAdd": record.get("cap_add") or None,
            "CapDrop": record.get("cap_drop") or None, "Dns": record.get("dns") or [],
            "ExtraHosts": [f"{h}:{ip}" for h, ip in record.get("add_hosts") or []] or None,
            "Privileged": bool(record.get("privileged")), "PublishAllPorts": bool(record.get("publish_all")),
            "ReadonlyRootfs": bool(record.get("read_only")), "SecurityOpt": record.get("security_opt"),
            "Tmpfs": {v["target"]: v.get("options") or "" for v in vols if v.get("type") == "tmpfs"} or None,
            "ShmSize": record.get("shm_size") or SHM_DEFAULT, "Init": record.get("init"),
            "Memory": record.get("memory") or 0, "MemorySwap": record.get("memory") or 0,
            "NanoCpus": int(round((record.get("cpus") or 0) * 1e9)), "PidsLimit": record.get("pids_limit"),
            "Ulimits": [{"Name": u["name"], "Soft": u["soft"], "Hard": u["hard"]}
                        for u in record.get("ulimits") or []] or None,
            "LogConfig": {"Type": "json-file", "Config": {k: str(v) for k, v in log_opts.items()}}}


def network_settings(names: Names, record: dict, running: bool) -> dict:
    """The primary network's address at the top (as Docker's), and one entry per network joined."""
    from steps.network import aliases_on, gateway, joined, mac_of
    from steps.networks import variant

    last = record.get("last") or {}
    ips = last.get("ips") or {}  # (a user network's, or several: the primary's is also "ip")
    ports: dict = {}
    if running:
        ports = {port_key(p): [{"HostIp": p["host_ip"], "HostPort": str(p["host_port"])}]
                 for p in record.get("publish") or []}
    networks = {}
    for i, name in enumerate(joined(record)):
        ip = ips.get(name, last.get("ip") if i == 0 else None) if running else None
        inst = variant(names.instance, name, strict=False)
        networks[name] = {"IPAddress": ip or "", "IPPrefixLen": inst.network.prefixlen if ip else 0,
                          "Gateway": gateway(inst) if ip else "", "MacAddress": mac_of(ip) if ip else "",
                          "NetworkID": inst.bridge, "Aliases": aliases_on(record, name, i == 0) or None}
    mode = record.get("network") or "bridge"
    if not networks:
        networks = {mode: {"IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": "", "NetworkID": mode}}
    top = next(iter(networks.values()))
    return {"IPAddress": top["IPAddress"], "IPPrefixLen": top["IPPrefixLen"], "Gateway": top["Gateway"],
            "MacAddress": top["MacAddress"], "Ports": ports, "SandboxKey": names.netns if running else "",
            "Networks": networks}  # `{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}`, as scripts ask


def mounts(record: dict) -> list[dict]:
    out = []
    for v in record.get("volumes") or []:
        kind = v.get("type", "bind")
        entry = {"Type": kind, "Source": v.get("source", ""), "Destination": v["target"],
                 "Mode": "ro" if v.get("ro") else "", "RW": not v.get("ro"), "Propagation": ""}
        if kind == "volume":
            entry = {"Type": kind, "Name": v.get("name", ""), **{k: x for k, x in entry.items() if k != "Type"},
                     "Driver": "local"}
        elif kind == "bind":
            entry["Propagation"] = "rprivate"
        out.append(entry)
    return out


def diy_facts(names: Names, record: dict) -> dict:
    from steps.runtime.profile import resolve
    from steps.state import load_runtime

    return {"state": state_of(names, record), "runtime": load_runtime(names),
            "security": resolve(record).describe(), "last": record.get("last") or {},
            "paths": {"dir": names.container_dir, "merged": names.merged, "cgroup": names.cgroup_path,
                      "log": names.log}, "record": record}


def docker_shape(names: Names, record: dict) -> dict:
    """One container as `docker inspect` prints it."""
    image = image_config(record)
    state = status(names, record)
    cfg, argv = configuration(record, image)
    return {"Id": container_id(record), "Created": record.get("created") or "", "Path": argv[0],
            "Args": argv[1:], "State": state, "Image": record.get("image_id") or "",
            "ResolvConfPath": f"{names.etc_dir}/resolv.conf", "HostnamePath": f"{names.etc_dir}/hostname",
            "HostsPath": f"{names.etc_dir}/hosts", "LogPath": names.log, "Name": "/" + names.container,
            "RestartCount": int((record.get("last") or {}).get("restart_count") or 0),
            "Driver": "overlay2", "Platform": "linux", "MountLabel": "", "ProcessLabel": "",
            "AppArmorProfile": "", "HostConfig": host_config(record),
            "GraphDriver": {"Name": "overlay2", "Data": {"MergedDir": names.merged, "UpperDir": names.upper,
                                                         "WorkDir": names.work}},
            "Mounts": mounts(record), "Config": cfg,
            "NetworkSettings": network_settings(names, record, state["Running"]),
            "DiyDocker": diy_facts(names, record)}


def inspect(refs: list[str] | str, fmt: str | None = None) -> int:
    """Print the containers as a JSON array, or each through the Go template fmt."""
    from steps.cli.gotemplate import parse

    template = parse(fmt) if fmt else None  # a bad template is refused before anything is read
    instance = config.load()
    shapes = []
    for ref in [refs] if isinstance(refs, str) else refs:
        shapes.append(docker_shape(*existing_container(instance, ref)))
    if template is None:
        print(json.dumps(shapes, indent=4))
        return 0
    for shape in shapes:
        print(template.render(shape))
    return 0
