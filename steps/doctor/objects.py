"""What the host holds of this instance, read only: every object carrying one of its marks (see
the package doc) by the container name it belongs to, the records, the leases as written, our
nft tables, the monitors. scan.py matches these against the records."""
from __future__ import annotations

import os

from steps import DiyError, ipam
from steps.doctor import Finding
from steps.names import Names, containers_dir, is_name, veth_prefix
from steps.state import read_json


class Objects:
    """What the host holds for one container name."""

    def __init__(self) -> None:
        self.mounts: list[str] = []
        self.cgroups: list[str] = []
        self.veths: list[str] = []
        self.leases: list[str] = []      # "IP" on the default network, "IP on NET" on a user network's
        self.networks: set[str] = set()  # the user networks it has a veth, lease or rule on
        self.rules: set[str] = set()
        self.paths: list[str] = []       # container dir, runtime dir, lock file
        self.monitors: list[int] = []


# --- facts ------------------------------------------------------------------------------------

def under(path: str, root: str) -> bool:
    return os.path.normpath(path).startswith(os.path.normpath(root) + "/")


def listing(root: str, sub: str) -> list[str]:
    d = os.path.join(root, sub)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def records(instance) -> tuple[dict[str, dict], dict[str, str]]:
    """(name -> record, name -> why it cannot be read) of the containers directory."""
    found, bad = {}, {}
    for name in filter(is_name, listing(containers_dir(instance), ".")):
        try:
            record = read_json(Names(instance, name).record)
        except DiyError as e:
            bad[name] = str(e)
            continue
        if record is not None:
            found[name] = record
    return found, bad


def raw_leases(instance) -> dict[str, str]:
    """leases.json as written (ipam.load drops the names without a container dir)."""
    try:
        return dict((read_json(ipam.path(instance)) or {}).get("leases") or {})
    except DiyError:
        return {}


def our_tables(instance, table_name: str | None = None) -> dict[str, object]:
    """Our nft tables by family (the instance's, or table_name). A table of our name without our
    owner mark is not ours, and is passed over (nat.tables refuses it: a doctor only reports)."""
    from steps import nat

    found = {}
    for family in nat.FAMILIES:
        try:
            table = nat.read_table(table_name or instance.nft_table, family)
        except DiyError:
            continue
        if table is not None and table.owner == nat.table_marker(instance):
            found[family] = table
    return found


def monitors(instance) -> dict[str, list[int]]:
    """Monitors of this instance by container: processes running the shim from our run root."""
    shim = os.path.join(instance.run_root, "shim.")
    found: dict[str, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a.startswith(shim) for a in argv):
            name = next((a[5:] for a in argv if a.startswith("name=")), "")
            if is_name(name):
                found.setdefault(name, []).append(int(entry))
    return found


def host_links() -> list[str]:
    try:
        return sorted(os.listdir("/sys/class/net"))
    except OSError:
        return []


def container_objects(instance) -> tuple[dict[str, Objects], list[Finding]]:
    """Every object carrying a container's mark, by container name; and the marked objects of
    no container's place (a mount elsewhere below our roots, a veth of no known name)."""
    from steps import nat

    per: dict[str, Objects] = {}

    def of(name: str) -> Objects:
        return per.setdefault(name, Objects())

    stray = mount_objects(instance, of) + cgroup_objects(instance, of)
    for base in container_bases(instance):
        for name in filter(is_name, listing(base, ".")):
            of(name).paths.append(os.path.join(base, name))
    locks = os.path.join(instance.run_root, "locks")
    for entry in listing(locks, "."):
        if entry.endswith(".lock") and is_name(entry[:-5]) and entry != "instance.lock":
            of(entry[:-5]).paths.append(os.path.join(locks, entry))
    nets = {"": instance, **user_networks(instance)}
    for net_name, inst in nets.items():
        on = f" on {net_name}" if net_name else ""
        for name, ip in raw_leases(inst).items():
            if is_name(name):
                of(name).leases.append(f"{ip}{on}")
                of(name).networks |= {net_name} - {""}
        for table in our_tables(inst).values():
            for rule in table.rules:
                name = (rule.comment.split(":") + ["", ""])[2]
                if is_name(name) and rule.comment.startswith(nat.own_prefixes(name)):
                    of(name).rules.add(rule.comment + on)
                    of(name).networks |= {net_name} - {""}
    for name, pids in monitors(instance).items():
        of(name).monitors = pids
    return per, stray + assign_veths(nets, per)


def container_bases(instance) -> tuple[str, str]:
    return containers_dir(instance), os.path.join(instance.run_root, "containers")


def mount_objects(instance, of) -> list[Finding]:
    """Mounts below a container's directories go to it; a rootfs or netns pin elsewhere below
    our roots is a stray (no step of this version puts one there). Any other mount there - an
    admin's own disk at volumes/, say - is not ours to judge: not reported."""
    from steps.facts import mounts_below

    bases = container_bases(instance)
    below = {m.mount_id: m for root in (instance.state_root, instance.run_root) for m in mounts_below(root)}
    stray = []
    for m in below.values():
        base = next((b for b in bases if under(m.mount_point, b)), None)
        name = m.mount_point[len(base) + 1:].split("/")[0] if base else ""
        if is_name(name):
            of(name).mounts.append(m.mount_point)
        elif m.fstype in ("overlay", "nsfs"):
            stray.append(Finding(f"{m.fstype} mount", m.mount_point, "below our roots, where no step mounts it"))
    return stray


def cgroup_objects(instance, of) -> list[Finding]:
    """The cgroups below our cgroup parent, in each hierarchy the cgroup stage uses."""
    from steps.cgroup import cgroup_dirs

    stray = []
    for _, parent in cgroup_dirs(instance.cgroup_parent):
        children = [n for n in listing(parent, ".") if os.path.isdir(os.path.join(parent, n))]
        for name in filter(is_name, children):
            of(name).cgroups.append(os.path.join(parent, name))
        if os.path.isdir(parent) and not children:
            stray.append(Finding("cgroup", parent, "our cgroup parent, empty (the last container's undo removes "
                                 "it)", "", "remove it"))
    return stray


def assign_veths(nets: dict, per: dict[str, Objects]) -> list[Finding]:
    """Host veths with the prefix of our default network or of one of our user networks go to the
    name they derive from on it; one of no name we know is a stray."""
    links = host_links()
    stray = []
    for net_name, inst in nets.items():
        prefix = veth_prefix(inst)
        by_link = {Names(inst, name).host_veth: name for name in per}
        on = f" (network {net_name})" if net_name else ""
        for link in (x for x in links if x.startswith(prefix)):
            if link in by_link:
                per[by_link[link]].veths.append(link)
                per[by_link[link]].networks |= {net_name} - {""}
            else:
                stray.append(Finding("host veth", link, f"named with this instance's prefix {prefix}{on}, and no "
                                     "container name of ours derives it", "", "delete the link"))
    return stray


# --- user networks (steps/networks.py) --------------------------------------------------------

def user_networks(instance) -> dict[str, object]:
    """The instance as the network stages see each user network we know of, by name: a record
    in STATE_ROOT/networks, a directory in RUN_ROOT/networks (its leases), or a bridge of our
    prefix whose ifalias names the network (see network.marker). A network whose record is gone
    is known by the names derived from its name (networks.variant, strict=False)."""
    from steps import networks

    known = set(networks.names(instance)) | set(listing(instance.run_root, "networks")) | set(bridge_aliases(instance))
    found = {}
    for name in sorted(known):
        try:
            networks.check_name(name)
            found[name] = networks.variant(instance, name, strict=False)
        except DiyError:  # a bad name, or a record that cannot be read: by the names derived from it
            if networks._NAME.fullmatch(name) and name not in networks.BUILTIN:
                bridge, table = networks.derived(instance, name)
                found[name] = instance._replace(network_name=name, bridge=bridge, nft_table=table)
    return found


def ifalias(link: str) -> str:
    try:
        with open(f"/sys/class/net/{link}/ifalias") as f:
            return f.read().strip()
    except OSError:
        return ""


def bridge_aliases(instance) -> dict[str, str]:
    """Network name -> bridge, of the links named with our bridge prefix whose ifalias is our
    mark for a network (`diy-docker STATE_ROOT NAME`): a look-alike without it is not ours."""
    from steps.names import bridge_prefix

    mark = f"diy-docker {instance.state_root} "
    found = {}
    for link in (x for x in host_links() if x.startswith(bridge_prefix(instance))):
        alias = ifalias(link)
        if alias.startswith(mark) and " " not in alias[len(mark):]:
            found[alias[len(mark):]] = link
    return found


def network_tables(instance) -> list[str]:
    """The nft tables named as a user network's of ours (`<nft_table>_n<8 hex>`, in either family)
    that carry our owner mark."""
    import re

    from steps import nftables

    pattern = re.compile(re.escape(instance.nft_table) + r"_n[0-9a-f]{8}")
    try:
        items = nftables.list_json("list tables")
    except nftables.NftError:
        return []
    names = sorted({t["table"]["name"] for t in items if "table" in t and pattern.fullmatch(t["table"]["name"])})
    return [n for n in names if our_tables(instance, n)]
