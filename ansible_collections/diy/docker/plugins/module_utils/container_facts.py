"""The container as a fact: module options and `diy-docker inspect` records put into one form.

Pure functions (no tool, no Ansible), as pyinfra's facts: each compared option has a
`want` normaliser (the option as the user wrote it) and a `have` reader (the record the tool
keeps under DiyDocker.record in `diy-docker inspect`), both returning the same form, so a
plain `!=` says whether the container must be re-created.
"""
import os
import re
import shlex

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


def size_bytes(value):
    """'64m', '64M', '64MB', '1g', 67108864 -> bytes, as docker's RAMInBytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*", str(value), re.IGNORECASE)
    if not m:
        raise ValueError(f"bad size {value!r} (e.g. 64m, 1g)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def argv(value):
    """A command as a list (word for word) or a string (split as a shell would, no expansion)."""
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def env_dict(value):
    out = {}
    for k, v in (value or {}).items():
        if isinstance(v, bool):
            raise ValueError(f"env {k}: the boolean {v} is ambiguous; quote it ('true', 'yes', ...)")
        out[str(k)] = "" if v is None else str(v)
    return out


def env_from_record(items):
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in items or [])


def _volume_form(source, target, ro, anonymous=False):
    target = os.path.normpath(target)
    mode = ":ro" if ro else ""
    if anonymous:
        return f"{target}{mode}"
    if source.startswith("/"):
        source = os.path.normpath(source)
    return f"{source}:{target}{mode}"


def volume_want(spec):
    parts = str(spec).split(":")
    if len(parts) == 1:
        return _volume_form("", parts[0], False, anonymous=True)
    if len(parts) == 2 and parts[1] in ("ro", "rw"):
        return _volume_form("", parts[0], parts[1] == "ro", anonymous=True)
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ValueError(f"bad volume {spec!r} (SRC:DST[:ro|rw], VOLUME:DST[:ro|rw] or /DST)")
    return _volume_form(parts[0], parts[1], len(parts) == 3 and parts[2] == "ro")


def volume_have(v):
    return _volume_form(v.get("name") or v.get("source") or "", v["target"], v.get("ro"),
                        anonymous=bool(v.get("anonymous")))


def port_want(spec):
    """[HOSTIP:][HOSTPORT:]CONTAINERPORT[/proto] -> HOSTIP:HOSTPORT:PORT/proto (HOSTPORT '' = chosen)."""
    text, _, proto = str(spec).partition("/")
    parts = text.rsplit(":", 2)
    ip, host = ("0.0.0.0", "") if len(parts) == 1 else ("0.0.0.0", parts[0]) if len(parts) == 2 else parts[:2]
    if not parts[-1].isdigit() or (host and not host.isdigit()):
        raise ValueError(f"bad port {spec!r} ([[HOSTIP:]HOSTPORT:]CONTAINERPORT[/tcp|/udp])")
    return f"{ip or '0.0.0.0'}:{host}:{int(parts[-1])}/{(proto or 'tcp').lower()}"


def port_have(p):
    host = "" if p.get("auto") else p.get("host_port")
    return f"{p.get('host_ip') or '0.0.0.0'}:{host}:{p['container_port']}/{p.get('proto') or 'tcp'}"


def restart_want(value):
    name, _, count = str(value).partition(":")
    if name not in ("no", "on-failure", "always", "unless-stopped") or (count and not count.isdigit()):
        raise ValueError(f"bad restart policy {value!r} (no, on-failure[:N], always, unless-stopped)")
    return f"{name}:{int(count)}" if count and int(count) else name


def restart_have(r):
    if not r or r.get("name") in (None, "", "no"):
        return "no"
    n = r.get("max_retries") or 0
    return f"{r['name']}:{n}" if n else r["name"]


def cap(name):
    name = str(name).upper()
    return name[4:] if name.startswith("CAP_") else name


def signal_name(value):
    text = str(value).upper()
    return text if text.isdigit() or text.startswith("SIG") else "SIG" + text


def image_ref(ref):
    """busybox -> busybox:latest; docker.io/library/x -> x (the record keeps the short form)."""
    ref = str(ref)
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
    last = ref.rsplit("/", 1)[-1]
    return ref if "@" in ref or ":" in last else ref + ":latest"


def ulimit_want(spec):
    name, _, limits = str(spec).partition("=")
    soft, _, hard = limits.partition(":")
    soft, hard = (-1 if x in ("unlimited", "-1") else int(x) for x in (soft, hard or soft))
    return f"{name}={soft}:{hard}"


def ulimit_have(u):
    return f"{u['name']}={u['soft']}:{u['hard']}"


def security_have(s):
    s = s or {}
    out = ["no-new-privileges"] if s.get("no_new_privileges") else []
    if s.get("seccomp") not in (None, "default"):
        out.append(f"seccomp={s['seccomp']}")
    return out


def _sorted(fn):
    return lambda items: sorted(fn(x) for x in items or [])


# option -> (want normaliser, have reader over (record, name)), in the order the diff shows them
COMPARED = {
    "image": (image_ref, lambda r, n: image_ref(r.get("image") or "")),
    "command": (argv, lambda r, n: r.get("command") or []),
    "entrypoint": (lambda v: [v] if v else [], lambda r, n: r.get("entrypoint") or []),
    "env": (env_dict, lambda r, n: env_from_record(r.get("env"))),
    "volumes": (_sorted(volume_want),
                lambda r, n: sorted(volume_have(v) for v in r.get("volumes") or [] if v.get("type") != "tmpfs")),
    "published_ports": (_sorted(port_want), lambda r, n: sorted(port_have(p) for p in r.get("publish") or [])),
    "publish_all": (bool, lambda r, n: bool(r.get("publish_all"))),
    "expose": (_sorted(lambda p: p if "/" in str(p) else f"{p}/tcp"), lambda r, n: sorted(r.get("expose") or [])),
    "network": (str, lambda r, n: r.get("network") or "bridge"),
    "restart": (restart_want, lambda r, n: restart_have(r.get("restart"))),
    "labels": (lambda d: {str(k): str(v) for k, v in (d or {}).items()}, lambda r, n: r.get("labels") or {}),
    "user": (str, lambda r, n: r.get("user") or ""),
    "working_dir": (str, lambda r, n: r.get("workdir") or ""),
    "hostname": (str, lambda r, n: r.get("hostname") or n),
    "memory": (size_bytes, lambda r, n: r.get("memory") or 0),
    "cpus": (float, lambda r, n: float(r.get("cpus") or 0)),
    "pids_limit": (int, lambda r, n: r.get("pids_limit") or 0),
    "shm_size": (size_bytes, lambda r, n: r.get("shm_size") or 64 * 1024 ** 2),
    "cap_add": (_sorted(cap), lambda r, n: sorted(cap(c) for c in r.get("cap_add") or [])),
    "cap_drop": (_sorted(cap), lambda r, n: sorted(cap(c) for c in r.get("cap_drop") or [])),
    "privileged": (bool, lambda r, n: bool(r.get("privileged"))),
    "security_opts": (_sorted(str), lambda r, n: sorted(security_have(r.get("security_opt")))),
    "read_only": (bool, lambda r, n: bool(r.get("read_only"))),
    "init": (bool, lambda r, n: bool(r.get("init"))),
    "dns": (_sorted(str), lambda r, n: sorted(r.get("dns") or [])),
    "etc_hosts": (_sorted(lambda h: ":".join(str(h).replace("=", ":", 1).split(":", 1))),
                  lambda r, n: sorted(f"{h}:{ip}" for h, ip in r.get("add_hosts") or [])),
    "stop_signal": (signal_name, lambda r, n: r.get("stop_signal") or "SIGTERM"),
    "ulimits": (_sorted(ulimit_want), lambda r, n: sorted(ulimit_have(u) for u in r.get("ulimits") or [])),
}


def wanted(params):
    """The compared options the task sets (None = not set = not compared), in the fact's form."""
    return {key: want(params[key]) for key, (want, _) in COMPARED.items() if params.get(key) is not None}


def current(inspect, keys):
    """The same keys read from one `diy-docker inspect` object."""
    record = (inspect.get("DiyDocker") or {}).get("record") or {}
    name = inspect.get("Name", "").lstrip("/")
    return {key: COMPARED[key][1](record, name) for key in keys}


def differences(want, have):
    return {k: {"before": have.get(k), "after": v} for k, v in want.items() if have.get(k) != v}


def running(inspect):
    state = inspect.get("State") or {}
    return bool(state.get("Running") or state.get("Restarting"))
