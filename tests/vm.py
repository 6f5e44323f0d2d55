"""The VM tier: boot a pure cgroup v2 kernel with virtme-ng and run pytest inside it.

Hybrid hosts (v1 controllers) cannot test the cgroup v2 paths; a VM can.
virtme-ng (`vng`) boots /boot/vmlinuz-* in qemu with the host's own root
filesystem shared read-only over 9p, so the guest sees this checkout and the
Python environment unchanged, and runs as root with a cgroup2-only
/sys/fs/cgroup (cpu, memory, pids, io).

Inside the guest, before pytest:

- the host root is shared a second time (`--rodir`) and remounted with
  `cache=loose`, and the Python prefixes are bound from that share: the
  default root share has no page cache, which makes every Python start and
  import crawl under emulation (`python -c pass` 2.3 s -> 0.6 s, importing
  the CLI 9 s -> 4.5 s);
- the checkout gets an overlay on tmpfs, so bytecode and pytest's cache are
  written in the guest, never on the host;
- /tmp (vng's overlay, which cannot be an overlay upper dir) becomes a tmpfs:
  the tests' instance roots (state, run) and tmp_path live there.

    python -m tests.vm [PYTEST ARGS...]   # default: -m v2 tests/test_cgroup_v2.py

`DIY_VM_KVM=1|0` forces hardware acceleration on or off (default: probed).
"""
from __future__ import annotations

import functools
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST_SHARE = "/run/diy-vm-host"  # the guest's cache=loose view of the host root
MEMORY = "2G"
TIMEOUT = 540  # seconds for one whole VM run; a hung guest is killed after it
KVM_PROBE_TIMEOUT = 60
SYSTEM_DIRS = {"/", "/usr", "/usr/local"}


def kernel() -> str | None:
    """The newest /boot/vmlinuz-* (the version changes with kernel updates)."""
    found = glob.glob("/boot/vmlinuz-*")
    return max(found, key=_version_key) if found else None


def _version_key(path: str) -> list[tuple[int, int, str]]:
    """vmlinuz-6.10.0-1-amd64 sorts after vmlinuz-6.9.0-3-amd64: numbers as numbers."""
    parts = re.split(r"[.+~-]", os.path.basename(path).removeprefix("vmlinuz-"))
    return [(1, int(p), "") if p.isdigit() else (0, 0, p) for p in parts]


def vng() -> str | None:
    """virtme-ng's command: beside this Python first (the venv), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "vng")
    return beside if os.access(beside, os.X_OK) else shutil.which("vng")


def missing() -> str | None:
    """Why the VM tier cannot run here, or None when it can."""
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
    if kernel() is None:
        return "no /boot/vmlinuz-* kernel to boot (apt-get install linux-image-amd64)"
    if vng() is None:
        return "vng (virtme-ng) is not installed (pip install virtme-ng)"
    if os.geteuid() != 0:
        return "needs root: the guest runs as the calling user and the tests need root"
    if not os.access(kernel(), os.R_OK):
        return f"{kernel()} is not readable"
    return None


def base_command(accel: bool) -> list[str]:
    """vng booting the kernel with the host root; the caller appends --exec."""
    cmd = [vng(), "--run", kernel(), "--force-9p", "--memory", MEMORY, "--cpus", str(min(os.cpu_count() or 1, 4)),
           f"--rodir={HOST_SHARE}=/"]
    return cmd if accel else [*cmd, "--disable-kvm"]


@functools.lru_cache(maxsize=1)
def kvm_works() -> bool:
    """Whether qemu can use /dev/kvm: some hosts have the device and no working
    hardware virtualisation (qemu aborts at once); then the guest is emulated (TCG)."""
    forced = os.environ.get("DIY_VM_KVM")
    if forced in ("0", "1"):
        return forced == "1"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    proc = run_raw([*base_command(True), "--exec", "true"], KVM_PROBE_TIMEOUT)
    return proc[0] == 0


def bind_points() -> list[str]:
    """The host trees the inner tests read: this checkout, the venv and the base Python (its
    stdlib alone when it is the system's /usr: vng's own overlays there stay)."""
    points = {REPO}
    for prefix in (sys.prefix, sys.base_prefix):
        for path in {prefix, os.path.realpath(prefix)}:
            points.add(sysconfig.get_paths()["stdlib"] if path in SYSTEM_DIRS else path)
    return sorted(points, key=len)


def guest_script(pytest_args: list[str]) -> str:
    """The shell the guest runs: fast mounts, a writable checkout, tmpfs /tmp, then pytest."""
    q = shlex.quote
    lines = ["set -eu",
             f"umount {HOST_SHARE}",
             f"mount -t 9p -o ro,trans=virtio,version=9p2000.L,access=any,msize=512000,cache=loose "
             f"virtme.initmount0 {HOST_SHARE}"]
    for point in bind_points():
        if point != REPO:
            lines.append(f"mount --bind {q(HOST_SHARE + point)} {q(point)}")
    lines += ["mkdir -p /run/diy-vm-repo/upper /run/diy-vm-repo/work",
              f"mount -t overlay -o lowerdir={q(HOST_SHARE + REPO)},upperdir=/run/diy-vm-repo/upper,"
              f"workdir=/run/diy-vm-repo/work overlay {q(REPO)}",
              "mount -t tmpfs -o mode=1777 tmpfs /tmp",
              f"cd {q(REPO)}",
              "echo \"guest: $(uname -r), cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)\"",
              f"exec {q(sys.executable)} -m pytest {' '.join(q(a) for a in pytest_args)}"]
    return "\n".join(lines)


def run_raw(cmd: list[str], timeout: float) -> tuple[int, str]:
    """Run vng under timeout(1), which kills its whole process group (qemu too) when late.
    stdin is /dev/null (vng needs one) and output comes through a pipe (vng wants no plain file)."""
    full = ["timeout", "--kill-after=10", str(int(timeout)), *cmd]
    try:
        proc = subprocess.run(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace", timeout=timeout + 30)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return 124, out + f"\n[vm] no exit {timeout + 30:.0f} s after the start: abandoned\n"
    out = proc.stdout
    if proc.returncode == 124:
        out += f"\n[vm] timed out after {timeout:.0f} s: the guest was killed\n"
    return proc.returncode, out


def run_pytest(pytest_args: list[str], timeout: float = TIMEOUT) -> tuple[int, str]:
    """Boot the VM once, run `pytest PYTEST_ARGS` from the checkout as root; (exit code, output)."""
    reason = missing()
    if reason:
        raise RuntimeError(f"the VM tier cannot run: {reason}")
    started = time.monotonic()
    code, out = run_raw([*base_command(kvm_works()), "--exec", guest_script(pytest_args)], timeout)
    mode = "kvm" if kvm_works() else "emulated (tcg)"
    return code, out + f"\n[vm] {os.path.basename(kernel())}, {mode}: {time.monotonic() - started:.1f} s\n"


def main(argv: list[str]) -> int:
    reason = missing()
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        return 0
    code, out = run_pytest(argv or ["-q", "-m", "v2", "tests/test_cgroup_v2.py"])
    print(out, end="")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
