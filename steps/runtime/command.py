"""What the container runs and as whom: Entrypoint + Cmd, the environment, the user from the
image's own /etc/passwd and /etc/group, and whether the command exists in the image.

Shared by the image stage (refusing a missing command before anything is made), the launch
stage (its report) and the runtime's plan, so it sits below all three.
"""
from __future__ import annotations

import os
import stat

from steps import StepFailed
from steps.volumes import resolve_in_root

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def command_argv(spec: dict, config: dict | None = None) -> list[str]:
    """Entrypoint + Cmd, as Docker builds them: --entrypoint replaces the image's
    Entrypoint and drops its Cmd; a command after `--` replaces Cmd; else /bin/sh."""
    config = config or {}
    if spec.get("entrypoint") is not None:
        entry, default_cmd = list(spec["entrypoint"]), []
    else:
        entry, default_cmd = list(config.get("Entrypoint") or []), list(config.get("Cmd") or [])
    cmd = list(spec.get("command") or default_cmd)
    argv = entry + cmd
    return argv or ["/bin/sh"]


def container_env(spec: dict, tty: bool, config: dict | None = None, home: str = "/root") -> dict[str, str]:
    """Defaults, then the image's Env, then --env."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": spec.get("hostname") or spec["name"], "HOME": home}
    if tty:
        env["TERM"] = os.environ.get("TERM", "xterm")
    for item in list((config or {}).get("Env") or []) + list(spec.get("env") or []):
        key, _, value = item.partition("=")
        env[key] = value
    return env


def read_db(rootfs: str, path: str) -> list[list[str]]:
    """The lines of the image's /etc/passwd or /etc/group, split on ':' (resolved inside
    the rootfs, opened without following a last symlink; a missing file is empty)."""
    host = resolve_in_root(rootfs, path)
    if host is None:
        return []
    try:  # O_PATH first: a device node the image put there is never opened on the host
        probe = os.open(host, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(probe).st_mode):
            return []
        fd = os.open(f"/proc/self/fd/{probe}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(probe)
    with os.fdopen(fd, "rb") as f:
        data = f.read(4 << 20).decode("utf-8", "replace")
    return [line.split(":") for line in data.splitlines() if line and not line.startswith("#")]


def resolve_user(rootfs: str, user: str | None) -> dict | None:
    """NAME|UID[:GROUP|GID] -> uid, gid, supplementary groups and home, from the image's
    own files (Docker's rules: a numeric uid need not exist; its gid is then 0)."""
    if not user:
        return None
    name, _, group = user.partition(":")
    passwd = [e for e in read_db(rootfs, "/etc/passwd") if len(e) >= 7 and e[2].isdigit() and e[3].isdigit()]
    entry = next((e for e in passwd if e[0] == name or (name.isdigit() and e[2] == name)), None)
    if entry is None and not name.isdigit():
        raise StepFailed(f"unable to find user {name}: no matching entries in the image's /etc/passwd")
    uid = int(name) if name.isdigit() else int(entry[2])
    gid = int(entry[3]) if entry else 0
    groups_db = [e for e in read_db(rootfs, "/etc/group") if len(e) >= 4 and e[2].isdigit()]
    if group:
        match = next((e for e in groups_db if e[0] == group or (group.isdigit() and e[2] == group)), None)
        if match is None and not group.isdigit():
            raise StepFailed(f"unable to find group {group}: no matching entries in the image's /etc/group")
        gid = int(group) if group.isdigit() else int(match[2])
    login = entry[0] if entry else None
    extra = sorted({int(e[2]) for e in groups_db if login and login in e[3].split(",")})
    return {"uid": uid, "gid": gid, "groups": sorted({gid, *extra}), "home": entry[5] if entry else "/"}


def command_candidates(argv0: str, env: list[str]) -> list[str]:
    """The absolute paths execvp would try for argv0 (a relative one is left to exec)."""
    path = dict(e.split("=", 1) for e in env).get("PATH", DEFAULT_PATH)
    if "/" in argv0:
        return [argv0] if argv0.startswith("/") else []
    return [os.path.join(d, argv0) for d in path.split(":") if d.startswith("/")]


def command_exists(lower_dirs: list[str], argv0: str, env: list[str]) -> bool:
    """Whether argv0 can be found in the image (top layer first), as execvp would look."""
    candidates = command_candidates(argv0, env)
    if not candidates:
        return True  # relative to the workdir: let exec decide
    for candidate in candidates:
        for layer in lower_dirs:
            try:
                found = resolve_in_root(layer, candidate)
            except Exception:  # noqa: BLE001 - a layer we cannot judge: let exec decide
                return True
            if found and os.path.exists(found):
                return True  # a directory or a non-executable: exec says 126
    return False
