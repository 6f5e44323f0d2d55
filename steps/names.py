"""Every host-visible name and path, derived from the instance and the container name.

Also the validation of the names a user gives (container, image reference).
"""
from __future__ import annotations

import os
import re

from steps import BadInput

try:
    from _sha256 import sha256  # the builtin: hashlib's OpenSSL binding costs every run ~2 ms to import
except ImportError:  # (Python 3.12 calls it _sha2)
    from hashlib import sha256
from steps.config import Instance


def is_name(name, longest: int = 64) -> bool:
    """A name of ours (container: 64, volume: 128): letters, digits, '_', '.', '-', starting with a
    letter or digit, at most `longest` characters."""
    return isinstance(name, str) and re.fullmatch(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{longest - 1}}}", name) is not None


def check_name(kind: str, name, longest: int, example: str = "") -> str:
    """is_name, or one line saying what a name may be."""
    if not is_name(name, longest):
        shown = repr(name) if isinstance(name, str) and len(name) <= longest + 6 else f"{str(name)[:40]!r}..."
        raise BadInput(f"bad {kind} name {shown}: use 1-{longest} letters, digits, '_', '.', '-', "
                       f"starting with a letter or digit{example}")
    return name


def check_container_name(name: str) -> str:
    return check_name("container", name, 64)


def generate_name() -> str:
    """A unique-enough name for a container started without --name."""
    adjectives = ("brave", "calm", "eager", "fond", "keen", "lucid", "merry", "quiet", "sharp", "witty")
    nouns = ("ant", "bee", "crab", "dove", "eel", "fox", "gnu", "hare", "ibis", "lynx")
    import secrets  # (3 ms of imports: only when a name is made up)

    return f"{secrets.choice(adjectives)}_{secrets.choice(nouns)}_{secrets.token_hex(3)}"


class Names:
    """Paths and host names owned by one container of one instance."""

    def __init__(self, instance: Instance, container: str):
        self.instance = instance
        self.container = check_container_name(container)

    @property
    def container_dir(self) -> str:
        return os.path.join(self.instance.state_root, "containers", self.container)

    @property
    def record(self) -> str:
        return os.path.join(self.container_dir, "info.json")

    @property
    def journal(self) -> str:
        return os.path.join(self.container_dir, "journal.jsonl")

    @property
    def log(self) -> str:
        return os.path.join(self.container_dir, "container.log")

    @property
    def monitor_log(self) -> str:
        """The detached monitor's own stdout and stderr, apart from the container's log."""
        return os.path.join(self.container_dir, "monitor.log")

    @property
    def reserve(self) -> str:
        """Ballast the record's writes may use when the container's layer filled the disk."""
        return os.path.join(self.container_dir, "reserve")

    @property
    def upper(self) -> str:
        return os.path.join(self.container_dir, "upper")

    @property
    def work(self) -> str:
        return os.path.join(self.container_dir, "work")

    @property
    def merged(self) -> str:
        return os.path.join(self.container_dir, "merged")

    @property
    def runtime_dir(self) -> str:
        return os.path.join(self.instance.run_root, "containers", self.container)

    @property
    def runtime_state(self) -> str:
        return os.path.join(self.runtime_dir, "state.json")

    @property
    def attach_socket(self) -> str:
        """Where a detached, interactive container's monitor serves its stdin to `attach`."""
        return os.path.join(self.runtime_dir, "attach.sock")

    @property
    def lock(self) -> str:
        return os.path.join(self.instance.run_root, "locks", f"{self.container}.lock")

    @property
    def netns(self) -> str:
        """The bind mount that pins the container's network namespace."""
        return os.path.join(self.runtime_dir, "netns")

    @property
    def etc_dir(self) -> str:
        """Rendered hosts, hostname, resolv.conf, bound into the container by launch."""
        return os.path.join(self.container_dir, "etc")

    @property
    def host_veth(self) -> str:
        """The host end of the veth pair: a short hash, as IFNAMSIZ is 16 bytes with the NUL
        and container names can be 64 characters (netdevice(7))."""
        key = f"{self.instance.state_root}\0{self.instance.cgroup_parent}\0{self.container}"
        if self.instance.network_name:  # one pair per network the container joins
            key += f"\0{self.instance.network_name}"
        return veth_prefix(self.instance) + sha256(key.encode()).hexdigest()[:7]

    @property
    def cgroup_path(self) -> str:
        """Relative to each hierarchy's root."""
        return f"{self.instance.cgroup_parent}/{self.container}"


def instance_lock(instance: Instance) -> str:
    return os.path.join(instance.run_root, "locks", "instance.lock")


def containers_dir(instance: Instance) -> str:
    return os.path.join(instance.state_root, "containers")


def veth_prefix(instance: Instance) -> str:
    """'dv' + 4 hex of the instance: whose a host veth is can be told from its name; a user
    network's are 'dw' + 4 hex of the instance and network (its bridge table drops frames from
    its own veths that have no rules yet, and must not see the other networks')."""
    key = f"{instance.state_root}\0{instance.cgroup_parent}"
    if instance.network_name:
        return "dw" + sha256(f"{key}\0{instance.network_name}".encode()).hexdigest()[:4]
    return "dv" + sha256(key.encode()).hexdigest()[:4]


def network_dir(instance: Instance) -> str:
    """Leases and other shared network state of the instance's default network, or of the user
    network this copy of the instance is (runtime: gone at reboot)."""
    if instance.network_name:
        return os.path.join(instance.run_root, "networks", instance.network_name)
    return os.path.join(instance.run_root, "network")


def resolver_dir(instance: Instance) -> str:
    """The instance's one resolver (every network's): its pidfile and socket."""
    return os.path.join(instance.run_root, "network")


def networks_dir(instance: Instance) -> str:
    """User-defined networks' records: NAME.json."""
    return os.path.join(instance.state_root, "networks")


def bridge_prefix(instance: Instance) -> str:
    """'dn' + 4 hex of the instance: user networks' bridges are named with it."""
    key = f"{instance.state_root}\0{instance.cgroup_parent}"
    return "dn" + sha256(key.encode()).hexdigest()[:4]


def layer_sizes(instance: Instance) -> str:
    """The size of each unpacked layer, by diff id (layers never change once unpacked)."""
    return os.path.join(instance.state_root, "cache", "layer-sizes.json")


def seccomp_cache(instance: Instance) -> str:
    """Compiled seccomp programs, one per profile and capability set."""
    return os.path.join(instance.state_root, "cache", "seccomp")


def images_dir(instance: Instance) -> str:
    return os.path.join(instance.state_root, "images")
