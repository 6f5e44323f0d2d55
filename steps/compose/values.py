"""The value types of a Compose file (05-services.md, 11-extension.md): scalars checked by type,
durations, byte sizes, ports and volume mounts, each normalized to one form or refused in one line."""
from __future__ import annotations

import ipaddress
import posixpath
import re

from steps import BadInput

_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_BYTES = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([kmgtp]?)i?b?", re.IGNORECASE)
PORT_KEYS = ("target", "published", "host_ip", "protocol", "mode")
VOLUME_KEYS = ("type", "source", "target", "read_only", "tmpfs")


def fail(message: str) -> BadInput:
    return BadInput(message)


def unsupported(path: str, hint: str = "") -> BadInput:
    return BadInput(f"unsupported key {path} ({hint or 'diy-docker does not support it; remove it'})")


def check_keys(mapping: dict, allowed, path: str, hints: dict | None = None, extensions: bool = False) -> None:
    """Refuse any key not in allowed (x- extension keys too, unless the spec allows them here)."""
    for key in mapping:
        if key in allowed or (extensions and isinstance(key, str) and key.startswith("x-")):
            continue
        raise unsupported(f"{path}.{key}" if path else str(key), (hints or {}).get(key, ""))


def want_map(value, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"bad {path}: expected a mapping (key: value lines), got {_kind(value)}")
    return value


def want_str(value, path: str, example: str = "") -> str:
    if not isinstance(value, str):
        hint = f", e.g. {example}" if example else "; quote it"
        raise fail(f"bad {path}: expected a string, got {_kind(value)} {value!r}{hint}")
    if "\0" in value:
        raise fail(f"bad {path}: NUL bytes are not allowed")
    return value


def want_bool(value, path: str) -> bool:
    if not isinstance(value, bool):
        raise fail(f"bad {path}: expected true or false, got {value!r}")
    return value


def want_int(value, path: str, least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise fail(f"bad {path}: expected a whole number of at least {least}, got {value!r}")
    return value


def want_strings(value, path: str) -> list[str]:
    """A string or a list of strings, as a list."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise fail(f"bad {path}: expected a string or a list of strings, got {_kind(value)}")
    return [want_str(v, f"{path}[{i}]") for i, v in enumerate(items)]


def list_to_map(items: list, key: str, path: str) -> dict:
    """["K=V", "K"] (environment, labels) or ["name", ...] (depends_on, networks) as a mapping."""
    out: dict = {}
    for i, item in enumerate(items):
        text = want_str(item, f"{path}[{i}]")
        if key in ("environment", "labels"):
            k, eq, v = text.partition("=")
            out[k] = v if eq else None
        elif key == "depends_on":
            out[text] = {"condition": "service_started"}
        else:
            out[text] = None
    return out


def text_value(value, path: str) -> str | None:
    """An environment or label value: a string, number or boolean as text; None stays None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    raise fail(f"bad {path}: expected a string, number or boolean, got {value!r}")


def pairs(value, path: str) -> dict:
    if value is None:
        return {}
    if isinstance(value, list):
        return list_to_map(value, "environment", path)
    mapping = want_map(value, path)
    for key in mapping:
        want_str(key, f"{path} key")
    return mapping


def _kind(value) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "a mapping",
             type(None): "nothing"}
    return names.get(type(value), "a string")


def duration(value, path: str) -> float:
    """Go's duration syntax, as Compose takes it: "1m30s", "500ms", "1.5h", "0" -> seconds."""
    text = want_str(value, path, '"10s" or "1m30s"')
    if text == "0":
        return 0.0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise fail(f"bad {path}: {text!r} is not a duration; use a number with a unit (h, m, s, ms, us), "
                   'e.g. "10s", "1m30s" or "500ms"')
    return round(sum(float(n) * _UNITS[u] for n, u in parts), 9)


def size(value, path: str) -> int:
    """A byte value ("2b", "1024kb", "300m", "1gb", or a whole number of bytes) -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _BYTES.fullmatch(want_str(value, path, '"64m" or "1g"').strip())
    if not m:
        raise fail(f"bad {path}: {value!r} is not a size; use bytes or a number with b, k, m, g, e.g. 64m or 1gb")
    return int(float(m[1]) * 1024 ** "bkmgtp".index((m[2] or "b").lower()))


def port_number(value, path: str, what: str) -> int:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else want_str(value, path)
    if "-" in text:
        raise fail(f"bad {path}: {what} {text!r} is a range; port ranges are not supported, list each port")
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise fail(f"bad {path}: {what} {text!r} must be a port number 1-65535, e.g. 8080:80")
    return int(text)


def host_ip(value, path: str) -> str:
    text = want_str(value, path)
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise fail(f"bad {path}: host_ip {text!r} is not an IPv4 address, e.g. 127.0.0.1") from None


def port(item, path: str) -> dict:
    """A port, short ("80", "8080:80", "127.0.0.1:8080:80/udp") or long, in the long form."""
    if isinstance(item, dict):
        return _long_port(item, path)
    text = str(item) if isinstance(item, int) and not isinstance(item, bool) else want_str(item, path, '"8080:80"')
    spec, _, proto = text.partition("/")
    if spec.startswith("["):
        raise fail(f"bad {path}: {text!r}: IPv6 host addresses are not supported, use an IPv4 one")
    parts = spec.split(":")
    if len(parts) > 3:
        raise fail(f"bad {path}: {text!r} is not [[HOST_IP:]PUBLISHED:]TARGET[/PROTOCOL], e.g. 127.0.0.1:8080:80/udp")
    ip, published, target = ([""] * (3 - len(parts)) + parts)
    return {"target": port_number(target, path, "target"),
            "published": port_number(published, path, "published") if published else None,
            "host_ip": host_ip(ip, path) if ip else "", "protocol": protocol(proto or "tcp", path),
            "mode": "ingress"}


def _long_port(item: dict, path: str) -> dict:
    check_keys(item, PORT_KEYS, path)
    if "target" not in item:
        raise fail(f"bad {path}: target is missing, e.g. {{target: 80, published: 8080}}")
    published = item.get("published")
    mode = want_str(item.get("mode") or "ingress", f"{path}.mode")
    if mode not in ("ingress", "host"):
        raise fail(f"bad {path}.mode: {mode!r} must be host or ingress")
    return {"target": port_number(item["target"], f"{path}.target", "target"),
            "published": None if published in (None, "") else port_number(published, f"{path}.published",
                                                                           "published"),
            "host_ip": host_ip(item["host_ip"], f"{path}.host_ip") if item.get("host_ip") else "",
            "protocol": protocol(item.get("protocol") or "tcp", f"{path}.protocol"), "mode": mode}


def protocol(value, path: str) -> str:
    text = want_str(value, path).lower()
    if text not in ("tcp", "udp"):
        raise fail(f"bad {path}: protocol {text!r} must be tcp or udp")
    return text


def target(value, path: str) -> str:
    """A mount target: an absolute container path, not /, without '..'."""
    text = want_str(value, path, "/data")
    if not text.startswith("/") or ".." in text.split("/"):
        raise fail(f"bad {path}: target {text!r} must be an absolute path without '..', e.g. /data")
    text = posixpath.normpath(text)
    if text == "/":
        raise fail(f"bad {path}: the target cannot be / (the container's root)")
    return text


def is_path(source: str) -> bool:
    """A short syntax source that names a host path (a bind), not a volume."""
    return source.startswith(("/", ".", "~"))


def volume(item, path: str) -> dict:
    """A service's volume, short ("data:/d:ro", "./rel:/d", "/abs:/d", "/d") or long, in the long form
    {type, source, target, read_only[, tmpfs: {size}]}; bind sources are still relative here."""
    if isinstance(item, dict):
        return _long_volume(item, path)
    text = want_str(item, path, '"data:/var/lib/data"')
    parts = text.split(":")
    if len(parts) == 1:
        return {"type": "volume", "source": None, "target": target(text, path), "read_only": False}
    if len(parts) > 3 or not parts[0]:
        raise fail(f"bad {path}: {text!r} is not SOURCE:TARGET[:ro|rw] or TARGET, "
                   "e.g. data:/data or ./conf:/etc/app:ro")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise fail(f"bad {path}: mode {mode!r} is not supported; use ro or rw")
    kind = "bind" if is_path(parts[0]) else "volume"
    return {"type": kind, "source": parts[0], "target": target(parts[1], path), "read_only": mode == "ro"}


def _long_volume(item: dict, path: str) -> dict:
    check_keys(item, VOLUME_KEYS, path)
    kind = want_str(item.get("type", "volume"), f"{path}.type")
    if kind not in ("volume", "bind", "tmpfs"):
        raise fail(f"bad {path}.type: {kind!r} is not supported; use volume, bind or tmpfs")
    if "target" not in item:
        raise fail(f"bad {path}: target is missing, e.g. {{type: volume, source: data, target: /data}}")
    source = item.get("source")
    source = None if source in (None, "") else want_str(source, f"{path}.source")
    if kind == "bind" and source is None:
        raise fail(f"bad {path}: a bind needs a source, e.g. {{type: bind, source: ./conf, target: /etc/app}}")
    if kind == "tmpfs" and source is not None:
        raise fail(f"bad {path}: a tmpfs has no source, e.g. {{type: tmpfs, target: /run}}")
    out = {"type": kind, "source": source, "target": target(item["target"], f"{path}.target"),
           "read_only": want_bool(item.get("read_only", False), f"{path}.read_only")}
    if "tmpfs" in item:
        out["tmpfs"] = _tmpfs_options(item["tmpfs"], kind, f"{path}.tmpfs")
    return out


def _tmpfs_options(value, kind: str, path: str) -> dict:
    if kind != "tmpfs":
        raise unsupported(path, "tmpfs options are for type: tmpfs")
    options = want_map(value, path)
    check_keys(options, ("size",), path)
    return {"size": size(options["size"], f"{path}.size")} if "size" in options else {}
