"""The instance: every host-wide name, from one YAML file plus environment overrides.

Lookup order (later wins): built-in defaults, the YAML file named by
$DIY_DOCKER_CONFIG (default /etc/diy-docker/config.yaml, optional), then
one environment variable per key: DIY_DOCKER_<KEY> (e.g. DIY_DOCKER_STATE_ROOT).
"""
from __future__ import annotations

import os
import re
from typing import NamedTuple

from steps import BadInput

DEFAULT_CONFIG_FILE = "/etc/diy-docker/config.yaml"
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_CGROUP_PARENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}(/[A-Za-z0-9_.-]{1,64}){0,3}$")


class Instance(NamedTuple):
    state_root: str = "/var/lib/docker_diy"
    run_root: str = "/run/docker_diy"
    cgroup_parent: str = "docker_diy"
    busybox: str = "/bin/busybox"
    stop_timeout: int = 10
    lock_timeout: int = 60
    bridge: str = "diy0"
    subnet: str = "172.19.0.0/16"
    nft_table: str = "docker_diy"
    max_layer_bytes: int = 16 << 30
    insecure_registries: str = ""  # comma-separated HOST[:PORT]; a YAML list works too
    pull_parallel: int = 3
    firewall_compat: str = "auto"  # auto | report | off: accepts for our bridge in a host chain that drops it
    network_pool: str = "10.89.0.0/16"  # user-defined networks' subnets are cut from it (as podman's)
    network_size: int = 24  # ... each this prefix length
    network_name: str = ""  # not a config key: set on the copy of the instance that one user network is

    @property
    def pool(self):
        """network_pool as an ipaddress network."""
        import ipaddress

        try:
            pool = ipaddress.IPv4Network(self.network_pool, strict=True)
        except ValueError as e:
            raise BadInput(f"bad config network_pool={self.network_pool!r}: {e} (expected e.g. 10.89.0.0/16)") \
                from None
        if not pool.prefixlen <= self.network_size <= 29:
            raise BadInput(f"bad config network_size={self.network_size}: a prefix length from "
                           f"{pool.prefixlen} (network_pool's) to 29")
        return pool

    @property
    def insecure(self) -> frozenset[str]:
        """Registries reached over plain HTTP (localhost and loopback always are)."""
        return frozenset(r.strip() for r in self.insecure_registries.split(",") if r.strip())

    @property
    def network(self):
        """The subnet as an ipaddress network; the gateway is its first address."""
        import ipaddress

        try:
            net = ipaddress.IPv4Network(self.subnet, strict=True)
        except ValueError as e:
            raise BadInput(f"bad config subnet={self.subnet!r}: {e} (expected e.g. 172.19.0.0/16)") from None
        if net.prefixlen > 29:
            raise BadInput(f"bad config subnet={self.subnet!r}: too small, use /29 or larger")
        return net

    def validate(self) -> Instance:
        for key in ("state_root", "run_root", "busybox"):
            value = getattr(self, key)
            if not os.path.isabs(value) or ".." in value.split("/"):
                raise BadInput(f"bad config {key}={value!r}: must be an absolute path without '..'")
        if not _CGROUP_PARENT.fullmatch(self.cgroup_parent) or ".." in self.cgroup_parent.split("/"):
            raise BadInput(f"bad config cgroup_parent={self.cgroup_parent!r}: "
                           "use letters, digits, '_', '.', '-' (and '/' between parts)")
        if not _IFNAME.fullmatch(self.bridge):
            raise BadInput(f"bad config bridge={self.bridge!r}: an interface name of 1-15 letters, digits, "
                           "'_', '.', '-'")
        if not _TABLE.fullmatch(self.nft_table):
            raise BadInput(f"bad config nft_table={self.nft_table!r}: use 1-64 letters, digits and '_'")
        _ = self.network, self.pool  # parse the subnets, refusing a bad one
        for key in ("stop_timeout", "lock_timeout"):
            if getattr(self, key) < 0:
                raise BadInput(f"bad config {key}={getattr(self, key)}: must be >= 0")
        for key in ("max_layer_bytes", "pull_parallel"):
            if getattr(self, key) < 1:
                raise BadInput(f"bad config {key}={getattr(self, key)}: must be >= 1")
        if self.firewall_compat not in ("auto", "report", "off"):
            raise BadInput(f"bad config firewall_compat={self.firewall_compat!r}: use auto (add the accepts our "
                           "bridge needs), report (only say what drops it) or off")
        from steps.image.reference import _HOST_RE

        for host in self.insecure:
            if not _HOST_RE.fullmatch(host):
                raise BadInput(f"bad config insecure_registries entry {host!r}: expected HOST[:PORT]")
        return self


def _read_file(path: str) -> dict:
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise BadInput(f"cannot read config {path}: {e.strerror}") from None
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise BadInput(f"cannot parse config {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise BadInput(f"bad config {path}: expected a mapping of keys to values")
    return data


def _coerce(key: str, value, kind, origin: str):
    if kind in (int, "int"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise BadInput(f"bad config {key}={value!r} in {origin}: expected a whole number") from None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if not isinstance(value, str):
        raise BadInput(f"bad config {key}={value!r} in {origin}: expected a string")
    return value


def load(environ: dict | None = None) -> Instance:
    """The instance configuration: defaults < YAML file < environment."""
    env = os.environ if environ is None else environ
    path = env.get("DIY_DOCKER_CONFIG", DEFAULT_CONFIG_FILE)
    known = {k: type(v) for k, v in Instance._field_defaults.items() if k != "network_name"}  # all have defaults
    values = {}
    for key, value in _read_file(path).items():
        if key not in known:
            raise BadInput(f"unknown config key {key!r} in {path}: known are {', '.join(known)}")
        values[key] = _coerce(key, value, known[key], path)
    for key, kind in known.items():
        var = "DIY_DOCKER_" + key.upper()
        if var in env:
            values[key] = _coerce(key, env[var], kind, var)
    return Instance(**values).validate()
