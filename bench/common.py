"""What the bench scripts share: a tool installed as a user installs it, and podman's leftovers."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PODMAN_TABLES = (("ip", "filter"), ("ip", "nat"))  # netavark's (through iptables-nft), left after its runs


def plain_install(workdir: str) -> str:
    """A venv that sees this checkout and the dependencies as `pip install .` leaves them: plain
    paths in site-packages. The CI's editable install adds a finder that every start of the
    console script imports (~8 ms, pathlib and urllib.parse with it); a user's install has none."""
    venv = os.path.join(workdir, "plain-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = os.path.join(venv, "lib", version, "site-packages")
    with open(os.path.join(target, "diy_docker_plain.pth"), "w") as f:
        f.write(f"{REPO}\n{sysconfig.get_paths()['purelib']}\n")
    # (the deps' site-packages is a plain path here: the editable install's .pth in it is not read)
    return os.path.join(venv, "bin", "python")



def installed_cli(workdir: str) -> list[str]:
    """The Docker face's command line, from the plain install."""
    return [plain_install(workdir), "-c", "from steps.cli import main; main()"]


def host_objects() -> set[str]:
    """nft tables and podman's cgroup parent, to remove what podman leaves behind that was not there before."""
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.split("\n")
    found = {f"table {t.split()[1]} {t.split()[2]}" for t in tables if len(t.split()) == 3}
    found |= {f"cgroup {root}" for root in cgroup_dirs("libpod_parent")}
    return found


def cgroup_dirs(name: str) -> list[str]:
    out = []
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        path = os.path.join("/sys/fs/cgroup", hierarchy, name)
        if os.path.isdir(path):
            out.append(path)
    return out


def remove_podman_leftovers(before: set[str]) -> None:
    """What podman's runs made and left (netavark's tables, libpod_parent cgroups), when the bench made it."""
    for family, name in PODMAN_TABLES:
        if f"table {family} {name}" not in before and f"table {family} {name}" in host_objects():
            subprocess.run(["nft", "delete", "table", family, name], capture_output=True)
    import time

    deadline = time.monotonic() + 10  # a conmon not yet reaped keeps its cgroup busy a moment
    for path in cgroup_dirs("libpod_parent"):
        if f"cgroup {path}" in before:
            continue
        for sub in sorted((d for d, _, _ in os.walk(path)), key=len, reverse=True):
            while True:
                try:
                    os.rmdir(sub)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.1)

