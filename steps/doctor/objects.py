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
        self.veth = ""
        self.lease = ""
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


def our_tables(instance) -> dict[str, object]:
    """Our nft tables by family. A table of our name without our owner mark is not ours, and
    is passed over (nat.tables refuses it: a doctor only reports)."""
    from steps import nat

    found = {}
    for family in nat.FAMILIES:
        try:
            table = nat.read_table(instance.nft_table, family)
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
    for name, ip in raw_leases(instance).items():
        if is_name(name):
            of(name).lease = ip
    for table in our_tables(instance).values():
        for rule in table.rules:
            name = (rule.comment.split(":") + ["", ""])[2]
            if is_name(name) and rule.comment.startswith(nat.own_prefixes(name)):
                of(name).rules.add(rule.comment)
    for name, pids in monitors(instance).items():
        of(name).monitors = pids
    return per, stray + assign_veths(instance, per)


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


def assign_veths(instance, per: dict[str, Objects]) -> list[Finding]:
    """Host veths with our prefix go to the name they derive from; one of no name we know is a stray."""
    prefix = veth_prefix(instance)
    by_link = {Names(instance, name).host_veth: name for name in per}
    stray = []
    for link in host_links():
        if not link.startswith(prefix):
            continue
        if link in by_link:
            per[by_link[link]].veth = link
        else:
            stray.append(Finding("host veth", link, f"named with this instance's prefix {prefix}, and no "
                                 "container name of ours derives it", "", "delete the link"))
    return stray
