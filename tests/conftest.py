"""Fixtures: every test gets its own instance and a leak check that fails it on residue."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests import host

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_for(predicate, timeout: float = 30, what: str = "condition", poll: float = 0.02) -> None:
    """Until predicate() holds; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def default_sigint() -> None:
    """In a child the tests will Ctrl-C: SIGINT's default action, whatever the suite inherited (a
    shell starts a background job with SIGINT ignored, and an ignored signal stays ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Instance:
    """A uniquely named diy-docker instance: its own roots and cgroup parent."""

    def __init__(self, tmp_root: str):
        self.id = uuid.uuid4().hex[:8]
        self.root = os.path.join(tmp_root, f"diyt-{self.id}")
        self.state_root = os.path.join(self.root, "state")
        self.run_root = os.path.join(self.root, "run")
        self.cgroup_parent = f"diyt-{self.id}"
        self.bridge = f"dt{self.id}"
        self.nft_table = f"diyt_{self.id}"
        n = int(self.id, 16)
        self.subnet = f"10.{200 + n % 50}.{(n >> 8) % 256}.0/24"
        self.network_pool = f"10.{150 + n % 50}.{(n >> 8) % 256}.0/24"  # user networks: /28s of it
        self.env = {**os.environ, "DIY_DOCKER_STATE_ROOT": self.state_root,
                    "DIY_DOCKER_RUN_ROOT": self.run_root, "DIY_DOCKER_CGROUP_PARENT": self.cgroup_parent,
                    "DIY_DOCKER_BRIDGE": self.bridge, "DIY_DOCKER_SUBNET": self.subnet,
                    "DIY_DOCKER_NFT_TABLE": self.nft_table, "DIY_DOCKER_NETWORK_POOL": self.network_pool,
                    "DIY_DOCKER_NETWORK_SIZE": "28",
                    "DIY_DOCKER_CONFIG": os.path.join(self.root, "config.yaml"),
                    "DIY_DOCKER_STOP_TIMEOUT": "3", "NO_COLOR": "1", "PYTHONPATH": REPO}
        self.env.pop("DIY_DOCKER_FAULT", None)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)  # every CLI call would compile the package again

    def cli(self, *args, fault: str | None = None, timeout: float = 60, check: bool = False,
            input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run `invoke ARGS...` from the repository, as a user would."""
        full_env = {**self.env, **(env or {})}
        if fault:
            full_env["DIY_DOCKER_FAULT"] = fault
        proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, env=full_env,
                              capture_output=True, text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def docker(self, *args, timeout: float = 60, check: bool = False, input: str | None = None,
               env: dict | None = None) -> subprocess.CompletedProcess:
        """Run `diy-docker ARGS...` (Docker's face, the console script's entry) as a user would."""
        code = "import sys; from steps.cli import main; sys.argv[0] = 'diy-docker'; main()"
        proc = subprocess.run([sys.executable, "-c", code, *args], cwd="/", env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"diy-docker {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def popen(self, *args, fault: str | None = None, **kwargs) -> subprocess.Popen:
        env = {**self.env, **({"DIY_DOCKER_FAULT": fault} if fault else {})}
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("preexec_fn", default_sigint)
        return subprocess.Popen([sys.executable, "-m", "invoke", *args], cwd=REPO, env=env,
                                text=True, **kwargs)

    def apply_env(self, monkeypatch) -> None:
        for key in ("DIY_DOCKER_STATE_ROOT", "DIY_DOCKER_RUN_ROOT", "DIY_DOCKER_CGROUP_PARENT",
                    "DIY_DOCKER_CONFIG", "DIY_DOCKER_STOP_TIMEOUT", "DIY_DOCKER_BRIDGE", "DIY_DOCKER_SUBNET",
                    "DIY_DOCKER_NFT_TABLE"):
            monkeypatch.setenv(key, self.env[key])
        monkeypatch.delenv("DIY_DOCKER_FAULT", raising=False)

    def veth_prefix(self) -> str:
        from steps import config
        from steps.names import veth_prefix

        return veth_prefix(config.load({k: v for k, v in self.env.items() if k.startswith("DIY_DOCKER")}))

    def extra_subnet(self, k: int) -> str:
        """The k-th /28 of the instance's network pool (k < 16), for an explicit --subnet."""
        return f"{self.network_pool.rsplit('.', 1)[0]}.{16 * k}/28"

    def bridge_prefix(self) -> str:
        """'dn' + 4 hex: the instance's user networks' bridges."""
        from steps import config
        from steps.names import bridge_prefix

        return bridge_prefix(config.load({k: v for k, v in self.env.items() if k.startswith("DIY_DOCKER")}))

    @staticmethod
    def free_port() -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def containers(self) -> list[str]:
        d = os.path.join(self.state_root, "containers")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []


def force_clean(inst: Instance) -> None:
    """After a leak was recorded: get the host back by brute force for the next tests."""
    for name in inst.containers():
        inst.cli("teardown", name, timeout=60)
    for pid in host.processes_mentioning(inst.root + "/"):  # a monitor or resolver left running
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for root in host.cgroup_roots():
        host.remove_cgroup_tree(os.path.join(root, inst.cgroup_parent))
    mounted = [line.split(" ")[4] for line in open("/proc/self/mountinfo")]
    for mp in sorted((m for m in mounted if m.startswith(inst.root)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)
    subprocess.run(["nft", "delete", "table", "ip", inst.nft_table], capture_output=True)
    subprocess.run(["nft", "delete", "table", "bridge", inst.nft_table], capture_output=True)
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.split("\n")
    for family, table in (line.split()[1:3] for line in tables if line.startswith("table ")):
        if table.startswith(f"{inst.nft_table}_n"):  # its user networks'
            subprocess.run(["nft", "delete", "table", family, table], capture_output=True)
    for link in os.listdir("/sys/class/net"):
        if link == inst.bridge or link.startswith((inst.veth_prefix(), inst.bridge_prefix())):
            subprocess.run(["ip", "link", "del", link], capture_output=True)


@pytest.fixture
def inst(monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root: the tests make real mounts, namespaces and cgroups")
    before = host.snapshot()
    instance = Instance("/tmp")
    os.makedirs(instance.root)
    instance.apply_env(monkeypatch)
    yield instance
    check_leaks(instance, before)


def check_leaks(instance: Instance, before: set[str], what: str = "left on the host") -> None:
    """After a test: what the instance left beside the snapshot before it fails the test (and is
    removed by force for the next ones); the instance's root goes either way."""
    leaks = set()
    for _ in range(50):  # the kernel releases some objects (cgroups of reaped tasks) a moment late
        leaks = host.only_ours(host.snapshot() - before, instance) \
            | host.instance_files(instance.state_root, instance.run_root) \
            | {f"process {pid} with {instance.root} in its command line"
               for pid in host.processes_mentioning(instance.root + "/")}
        if not leaks:
            break
        time.sleep(0.05)
    if leaks:
        force_clean(instance)
    shutil.rmtree(instance.root, ignore_errors=True)
    if leaks:
        pytest.fail(f"{what}:\n  " + "\n  ".join(sorted(leaks)), pytrace=False)
