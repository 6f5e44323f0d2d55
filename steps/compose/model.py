"""A Compose project validated and normalized into a plain, JSON-serializable dict:

    {"name", "directory", "files", "services": {name: {...}}, "networks": {key: {...}},
     "volumes": {key: {...}}, "order": [services, dependencies first]}

Top level as the Compose Specification defines it (04-version-and-name.md, 06-networks.md,
07-volumes.md), restricted to what diy-docker supports; every other key is refused in one line."""
from __future__ import annotations

import ipaddress
import re

from steps.compose import values as v
from steps.compose.options import labels
from steps.compose.service import normalize_service
from steps.compose.variables import Lookup

TOP_KEYS = ("version", "name", "services", "networks", "volumes")
TOP_HINTS = {"secrets": "pass them as environment or a bind-mounted file",
             "configs": "bind-mount the file with volumes:", "include": "give each file with -f"}
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
CONTAINER_NAME_MAX = 64


def normalize(tree: dict, name: str, directory: str, files: list[str], lookup: Lookup) -> dict:
    """The whole project; refuses the first problem found, in one line."""
    v.check_keys(tree, TOP_KEYS, "", TOP_HINTS, extensions=True)
    services = v.want_map(tree.get("services"), "services")
    if not services:
        raise v.fail("bad compose file: no services; add one under services:, e.g. web: {image: nginx}")
    out_services = {}
    for service, raw in services.items():
        check_service_name(name, service)
        out_services[service] = normalize_service(service, raw, directory, lookup)
    networks = top_networks(tree.get("networks"), name)
    volumes = top_volumes(tree.get("volumes"), name)
    check_references(out_services, networks, volumes)
    if any("default" in s["networks"] for s in out_services.values()) and "default" not in networks:
        networks["default"] = network(None, "default", name)
    check_subnets(networks)
    return {"name": name, "directory": directory, "files": list(files), "services": out_services,
            "networks": networks, "volumes": volumes, "order": order(out_services)}


def check_service_name(project: str, service) -> None:
    if not isinstance(service, str) or not _SERVICE.fullmatch(service):
        raise v.fail(f"bad service name {service!r}: use letters, digits, '_', '.', '-', starting with a letter "
                     "or digit, e.g. web")
    container = f"{project}-{service}-1"
    if len(container) > CONTAINER_NAME_MAX:
        raise v.fail(f"bad service name {service!r}: its container {container} is longer than "
                     f"{CONTAINER_NAME_MAX} characters; use a shorter service or project name")


def top_networks(value, project: str) -> dict[str, dict]:
    mapping = v.want_map(value, "networks")
    return {key: network(conf, key, project) for key, conf in mapping.items()}


def network(conf, key, project: str) -> dict:
    """{"name", "external", "driver", "subnet", "labels"}; name is the full name on the host."""
    path = f"networks.{key}"
    _check_key(key, "network")
    conf = v.want_map(conf, path)
    v.check_keys(conf, ("driver", "ipam", "labels", "name", "external"), path, extensions=True)
    external = _external(conf, path, ("name",))
    driver = v.want_str(conf.get("driver", "bridge"), f"{path}.driver")
    if driver != "bridge":
        raise v.fail(f"bad {path}.driver: {driver!r} is not supported; use bridge (the default)")
    return {"name": _full_name(conf, key, project, external, path), "external": external, "driver": "bridge",
            "subnet": subnet(conf.get("ipam"), f"{path}.ipam"), "labels": _labels(conf.get("labels"), path)}


def subnet(value, path: str) -> str | None:
    """ipam.config[].subnet: one IPv4 subnet, or None (chosen when the network is made)."""
    ipam = v.want_map(value, path)
    v.check_keys(ipam, ("config",), path)
    configs = ipam.get("config") or []
    if not isinstance(configs, list) or len(configs) > 1:
        raise v.fail(f"bad {path}.config: expected a list of one entry, e.g. [{{subnet: 172.28.0.0/16}}]")
    if not configs:
        return None
    entry = v.want_map(configs[0], f"{path}.config[0]")
    v.check_keys(entry, ("subnet",), f"{path}.config[0]")
    text = v.want_str(entry.get("subnet"), f"{path}.config[0].subnet", "172.28.0.0/16")
    try:
        net = ipaddress.IPv4Network(text)
    except ValueError:
        raise v.fail(f"bad {path}.config[0].subnet: {text!r} is not an IPv4 subnet, e.g. 172.28.0.0/16") from None
    if net.prefixlen > 29:
        raise v.fail(f"bad {path}.config[0].subnet: {text} is too small; use a /29 or larger, e.g. 172.28.0.0/24")
    return str(net)


def top_volumes(value, project: str) -> dict[str, dict]:
    mapping = v.want_map(value, "volumes")
    return {key: volume(conf, key, project) for key, conf in mapping.items()}


def volume(conf, key, project: str) -> dict:
    """{"name", "external", "driver", "labels"}; name is the volume's full name."""
    path = f"volumes.{key}"
    _check_key(key, "volume")
    conf = v.want_map(conf, path)
    v.check_keys(conf, ("driver", "labels", "name", "external"), path, extensions=True)
    external = _external(conf, path, ("name",))
    driver = v.want_str(conf.get("driver", "local"), f"{path}.driver")
    if driver != "local":
        raise v.fail(f"bad {path}.driver: {driver!r} is not supported; use local (the default)")
    return {"name": _full_name(conf, key, project, external, path), "external": external, "driver": "local",
            "labels": _labels(conf.get("labels"), path)}


def _check_key(key, what: str) -> None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise v.fail(f"bad {what} name {key!r}: use letters, digits, '_', '.', '-', starting with a letter or digit")


def _external(conf: dict, path: str, allowed: tuple) -> bool:
    external = v.want_bool(conf.get("external", False), f"{path}.external")
    extra = [k for k in conf if k not in ("external", *allowed) and not str(k).startswith("x-")]
    if external and extra:
        raise v.fail(f"bad {path}: an external one is made elsewhere; {extra[0]} cannot be given with external: true")
    return external


def _full_name(conf: dict, key: str, project: str, external: bool, path: str) -> str:
    """name: as given, else the key for an external one, else PROJECT_KEY."""
    if conf.get("name") is not None:
        name = v.want_str(conf["name"], f"{path}.name")
        if not _KEY.fullmatch(name) or len(name) > 128:
            raise v.fail(f"bad {path}.name: {name!r}: use letters, digits, '_', '.', '-', starting with a letter "
                         "or digit")
        return name
    return key if external else f"{project}_{key}"


def _labels(value, path: str) -> dict[str, str]:
    return labels(value, f"{path}.labels")


def check_references(services: dict, networks: dict, volumes: dict) -> None:
    """Every network, volume and dependency a service names exists."""
    for name, s in services.items():
        for net in s["networks"]:
            if net not in networks and net != "default":
                raise v.fail(f"bad services.{name}.networks: network {net!r} is not declared under the top-level "
                             f"networks:; add it there, e.g. networks: {{{net}: {{}}}}")
        for vol in s["volumes"]:
            if vol["type"] == "volume" and vol["source"] is not None and vol["source"] not in volumes:
                raise v.fail(f"bad services.{name}.volumes: volume {vol['source']!r} is not declared under the "
                             f"top-level volumes:; add it there, e.g. volumes: {{{vol['source']}: {{}}}}")
        for dep in s["depends_on"]:
            if dep not in services:
                raise v.fail(f"bad services.{name}.depends_on: service {dep!r} is not defined in this project")


def check_subnets(networks: dict) -> None:
    """Two networks of the file whose subnets overlap are refused."""
    given = [(k, ipaddress.IPv4Network(n["subnet"])) for k, n in networks.items() if n["subnet"]]
    for i, (a, net_a) in enumerate(given):
        for b, net_b in given[i + 1:]:
            if net_a.overlaps(net_b):
                raise v.fail(f"bad networks: {a} ({net_a}) and {b} ({net_b}) overlap; give them disjoint subnets")


def order(services: dict) -> list[str]:
    """Service names, each after its dependencies (ties by name); a cycle is refused, named."""
    done: list[str] = []
    for name in sorted(services):
        _visit(name, services, done, [])
    return done


def _visit(name: str, services: dict, done: list[str], trail: list[str]) -> None:
    if name in done:
        return
    if name in trail:
        cycle = trail[trail.index(name):] + [name]
        raise v.fail(f"bad depends_on: dependency cycle {' -> '.join(cycle)}; remove one of these dependencies")
    for dep in sorted(services[name]["depends_on"]):
        _visit(dep, services, done, [*trail, name])
    done.append(name)
