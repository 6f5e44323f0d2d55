"""Host snapshots for the leak check: what container work can leave behind."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time


def mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        out = set()
        for line in f:
            fields = line.split(" ")
            fstype = line.split(" - ")[1].split(" ")[0]
            if fields[4] != "/run/netns":  # iproute2 binds it once, for every netns ever added
                out.add(f"mount {fields[4]} ({fstype})")
        return out


def cgroup_roots() -> list[str]:
    roots = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fstype = line.split(" - ")[1].split(" ")[0]
            if fstype in ("cgroup", "cgroup2"):
                roots.append(line.split(" ")[4])
    return roots


def remove_cgroup_tree(top: str) -> None:
    """Brute force, for clean-up after a failure: kill what is in top and below, rmdir deepest first."""
    for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
        try:
            for pid in open(os.path.join(dirpath, "cgroup.procs")).read().split():
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
        for _ in range(100):
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)


SANDBOX_CGROUPS = ("process_api", "payload", "supervisor")  # the machine's own, as host-residue skips them


def cgroups() -> set[str]:
    out = set()
    for root in cgroup_roots():
        for dirpath, dirnames, _ in os.walk(root):
            depth = dirpath[len(root):].count("/")
            if depth >= 3:
                dirnames[:] = []
            dirnames[:] = [d for d in dirnames if d not in SANDBOX_CGROUPS]
            for d in dirnames:
                out.add(f"cgroup {os.path.join(dirpath, d)}")
    return out


def processes() -> set[str]:
    """Processes whose root is not the host's: container processes."""
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            root = os.readlink(f"/proc/{pid}/root")
        except OSError:
            continue
        if root != "/":
            out.add(f"process {pid} rooted at {root}")
    return out


def links() -> set[str]:
    return {f"link {n}" for n in os.listdir("/sys/class/net")}


def netns() -> set[str]:
    try:
        return {f"netns {n}" for n in os.listdir("/run/netns")}
    except FileNotFoundError:
        return set()


def nft_tables() -> set[str]:
    if not shutil.which("nft"):
        return set()
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {f"nft {line.strip()}" for line in out.splitlines() if line.strip()}


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains TEXT (e.g. a test's root): monitors, resolvers or
    registries left running, which `processes()` does not see (they are rooted at /)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def snapshot() -> set[str]:
    return mounts() | cgroups() | processes() | links() | netns() | nft_tables()


def only_ours(found: set[str], inst) -> set[str]:
    """The whole-host difference by default. With DIY_TEST_LEAKS=instance (several suites running
    at once on one host, e.g. while developing in parallel) only what carries this instance's marks:
    its root, cgroup parent, bridge, veth prefix or nft table."""
    if os.environ.get("DIY_TEST_LEAKS") != "instance":
        return found
    marks = (inst.root, f"/{inst.cgroup_parent}", f"link {inst.bridge}", f"link {inst.veth_prefix()}",
             f"link {inst.bridge_prefix()}", f" {inst.nft_table}")
    return {item for item in found if any(m in item for m in marks)}


def instance_files(state_root: str, run_root: str) -> set[str]:
    """Files an instance must not keep once its containers are gone (images may stay)."""
    left = set()
    for base in (os.path.join(state_root, "containers"), os.path.join(run_root, "containers"),
                 os.path.join(state_root, "images", "tmp"), os.path.join(run_root, "network")):
        if os.path.isdir(base):
            left |= {f"file {os.path.join(base, n)}" for n in os.listdir(base)}
    locks = os.path.join(run_root, "locks")
    if os.path.isdir(locks):
        left |= {f"file {os.path.join(locks, n)}" for n in os.listdir(locks)
                 if n != "instance.lock"}
    return left
