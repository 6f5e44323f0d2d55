"""The later flags of `run`, validated before anything is made: --env-file, --add-host, --dns,
--init, --stop-signal, --label, --ulimit, --shm-size, --cidfile (Docker's formats)."""
from __future__ import annotations

import ipaddress
import os
import re

from steps import BadInput, DiyError

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOST = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")
_SIZE = re.compile(r"^([0-9]+)([bkmg]?)b?$", re.IGNORECASE)
# Docker's --ulimit names (docker/go-units ulimit.go) and their setrlimit(2) resources.
ULIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
           "rss", "rtprio", "rttime", "sigpending", "stack")
UNLIMITED = -1  # resource.RLIM_INFINITY
TINI = "/usr/bin/tini-static"  # Debian's tini: static, so an image without a libc can run it
INIT_PATH = "/sbin/docker-init"  # where Docker's own init is bound
ENV_FILE_MAX = 1 << 20
DEFAULT_SHM = 64 << 20


def parse_env_files(paths: list[str]) -> list[str]:
    """--env-file: KEY=VALUE lines, `#` comments and blank lines skipped, a bare KEY copied from
    this environment (skipped when unset), values taken as they are (no quotes processing)."""
    out = []
    for path in paths or []:
        for number, line in enumerate(read_env_file(path).splitlines(), 1):
            line = line.lstrip()
            if not line or line.startswith("#"):
                continue
            key, eq, value = line.partition("=")
            if not _ENV_KEY.fullmatch(key) or "\0" in value:
                raise BadInput(f"bad env-file {path!r} line {number}: {key[:40]!r} is not KEY=VALUE with KEY "
                               "of letters, digits and '_', e.g. DEBUG=1")
            if eq:
                out.append(f"{key}={value}")
            elif key in os.environ:
                out.append(f"{key}={os.environ[key]}")
    return out


def read_env_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(ENV_FILE_MAX + 1)
    except OSError as e:
        raise BadInput(f"bad env-file {path!r}: cannot read it: {e.strerror}") from None
    if len(data) > ENV_FILE_MAX:
        raise BadInput(f"bad env-file {path!r}: larger than 1 MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        number = data[:e.start].count(b"\n") + 1
        raise BadInput(f"bad env-file {path!r} line {number}: not valid UTF-8") from None
    return text.removeprefix("\ufeff")


def parse_ip(text: str, what: str, item: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip("[]") if text.startswith("[") else text))
    except ValueError:
        raise BadInput(f"bad {what} {item!r}: {text!r} is not an IP address, e.g. 10.0.0.5 or 2001:db8::1") from None


def parse_add_hosts(items: list[str]) -> list[list[str]]:
    """--add-host HOST:IP or HOST=IP; IP may be host-gateway (the instance bridge's gateway)."""
    out = []
    for item in items or []:
        sep = "=" if "=" in item else ":"
        host, found, ip = item.partition(sep)
        if not found or not _HOST.fullmatch(host):
            raise BadInput(f"bad add-host {item!r}: expected HOST:IP or HOST=IP, e.g. db:10.0.0.5 or "
                           "gw=host-gateway")
        out.append([host, ip if ip == "host-gateway" else parse_ip(ip, "add-host", item)])
    return out


def parse_dns(items: list[str]) -> list[str]:
    return [parse_ip(item, "dns", item) for item in items or []]


def parse_stop_signal(text: str | None) -> str | None:
    """SIGUSR1, USR1 or a number -> the signal's name; None leaves it to the image, else SIGTERM."""
    from steps.runtime.signals import signal_name

    return None if text in (None, "") else signal_name(text, "stop-signal")


def parse_labels(items: list[str]) -> dict[str, str]:
    """--label K=V (a bare K gets an empty value, as Docker's)."""
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        if not key or any(c.isspace() or ord(c) < 32 for c in key) or "\0" in value:
            raise BadInput(f"bad label {item!r}: expected KEY=VALUE with a KEY of no spaces, "
                           "e.g. com.example.team=web")
        out[key] = value
    return out


def parse_ulimits(items: list[str]) -> list[dict]:
    """--ulimit NAME=SOFT[:HARD]; unlimited or -1; each name once, soft <= hard, hard within ours."""
    out: dict[str, dict] = {}
    for item in items or []:
        name, _, values = item.partition("=")
        soft_text, _, hard_text = values.partition(":")
        if name not in ULIMITS:
            raise BadInput(f"bad ulimit {item!r}: unknown name {name!r}; use one of {', '.join(ULIMITS)}")
        soft = limit_value(soft_text, item)
        hard = limit_value(hard_text, item) if hard_text else soft
        if hard != UNLIMITED and (soft == UNLIMITED or soft > hard):
            raise BadInput(f"bad ulimit {item!r}: the soft limit is above the hard one, e.g. nofile=1024:2048")
        check_within_ours(item, name, hard)
        out[name] = {"name": name, "soft": soft, "hard": hard}
    return list(out.values())


def limit_value(text: str, item: str) -> int:
    if text in ("unlimited", "-1"):
        return UNLIMITED
    if not text.isdigit() or int(text) >= 2**63:
        raise BadInput(f"bad ulimit {item!r}: expected NAME=SOFT[:HARD] with whole numbers or unlimited, "
                       "e.g. nofile=1024:2048")
    return int(text)


def check_within_ours(item: str, name: str, hard: int) -> None:
    """Raising a hard limit needs CAP_SYS_RESOURCE (setrlimit(2)): without it (a confined host)
    the init would fail after everything is made, so refuse now."""
    import resource

    from steps.facts import own_permitted

    if own_permitted() >> 24 & 1:  # CAP_SYS_RESOURCE (capabilities(7))
        return
    ours = resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))[1]
    if ours != UNLIMITED and (hard == UNLIMITED or hard > ours):
        raise BadInput(f"bad ulimit {item!r}: the hard limit is above this host's ({ours}) and raising it "
                       "needs CAP_SYS_RESOURCE, which diy-docker lacks here")


def parse_shm_size(text: str | None) -> int | None:
    """--shm-size: a number with an optional unit b, k, m, g (bytes without one), above 0."""
    if text in (None, ""):
        return None
    m = _SIZE.fullmatch(str(text).strip())
    value = int(m[1]) * 1024 ** "bkmg".index((m[2] or "b").lower()) if m else 0
    if value <= 0 or value >= 2**63:
        raise BadInput(f"bad shm-size {text!r}: expected a size above 0 with an optional unit b, k, m, g, e.g. 64m")
    return value


def check_cidfile(path: str | None) -> str | None:
    """--cidfile: refused when the file exists (Docker's rule) or its directory does not."""
    if path in (None, ""):
        return None
    full = os.path.abspath(path)
    if os.path.lexists(full):
        raise BadInput(f"bad cidfile {path!r}: container ID file found, make sure the other container isn't "
                       "running or delete it")
    if not os.path.isdir(os.path.dirname(full)):
        raise BadInput(f"bad cidfile {path!r}: its directory does not exist")
    return full


def write_cidfile(path: str | None, container_id: str) -> None:
    """The container's ID, written where it was asked; never over a file made meanwhile."""
    if not path:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise DiyError(f"cannot write cidfile {path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(container_id)


def remove_cidfile(path: str | None, container_id: str) -> None:
    """Undo write_cidfile after a failed run, only if the file still holds our ID."""
    try:
        with open(path or "") as f:
            if f.read(100) == container_id:
                os.unlink(path)
    except OSError:
        pass


def check_init(wanted: bool) -> bool:
    if wanted and not os.access(TINI, os.X_OK):
        raise DiyError(f"cannot use --init: {TINI} is missing; install tini (apt-get install tini)")
    return bool(wanted)
