"""The Ansible collection (ansible_collections/diy/docker) against two local "hosts".

Each inventory host has `ansible_connection=local` and its own diy-docker instance (state and
run roots, cgroup parent, bridge, subnet, nft table) as host vars, so one play converges a small
fleet. The collection is built and installed as a user would (ansible-galaxy), and plays run
through `ansible-playbook`; the containers are then asked through the tool itself.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from tests import host
from tests.conftest import REPO, Instance, check_leaks

BIN = os.path.dirname(sys.executable)
PYTHON = "/opt/diy-docker/bin/python" if os.path.exists("/opt/diy-docker/bin/python") else sys.executable
TOOL = os.path.join(BIN, "diy-docker")
INSTANCE_KEYS = ("DIY_DOCKER_STATE_ROOT", "DIY_DOCKER_RUN_ROOT", "DIY_DOCKER_CGROUP_PARENT", "DIY_DOCKER_BRIDGE",
                 "DIY_DOCKER_SUBNET", "DIY_DOCKER_NFT_TABLE", "DIY_DOCKER_CONFIG", "DIY_DOCKER_STOP_TIMEOUT",
                 "DIY_DOCKER_NETWORK_POOL", "DIY_DOCKER_NETWORK_SIZE")

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "ansible-playbook")),
                                reason="needs ansible-core (pip install ansible-core)")


def ansible_env(home: str) -> dict:
    """ansible's own files in the test's tmp dir; no instance of ours leaks in from os.environ."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIY_DOCKER_", "ANSIBLE_"))}
    cfg = os.path.join(home, "ansible.cfg")
    if not os.path.exists(cfg):
        with open(cfg, "w") as f:
            f.write("[defaults]\n")
    env.update(ANSIBLE_HOME=home, ANSIBLE_CONFIG=cfg, ANSIBLE_LOCAL_TEMP=os.path.join(home, "tmp"),
               ANSIBLE_REMOTE_TEMP=os.path.join(home, "remote"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="0",
               ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_PYTHON_INTERPRETER=PYTHON, LC_ALL="C.UTF-8",
               ANSIBLE_COLLECTIONS_PATH=os.path.join(home, "collections"))
    return env


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """diy.docker built and installed with ansible-galaxy; the ansible home it lives in."""
    home = str(tmp_path_factory.mktemp("ansible"))
    env = ansible_env(home)
    galaxy = os.path.join(BIN, "ansible-galaxy")
    src = os.path.join(REPO, "ansible_collections", "diy", "docker")
    subprocess.run([galaxy, "collection", "build", "--output-path", home, src], env=env, cwd=home,
                   check=True, capture_output=True)
    subprocess.run([galaxy, "collection", "install", "-p", env["ANSIBLE_COLLECTIONS_PATH"],
                    os.path.join(home, "diy-docker-1.0.0.tar.gz")], env=env, cwd=home, check=True,
                   capture_output=True)
    return home


@pytest.fixture
def second(inst):
    """A second instance beside `inst`, cleaned and leak-checked the same way."""
    before = host.snapshot()
    other = Instance("/tmp")
    os.makedirs(other.root)
    yield other
    for name in other.containers():
        other.docker("rm", "-f", name, timeout=60)
    check_leaks(other, before, "second instance left on the host")


@pytest.fixture
def fleet(inst, second, collection, tmp_path):
    """An inventory of two local hosts, h1 on `inst` and h2 on `second`."""
    hosts = {}
    for name, instance in (("h1", inst), ("h2", second)):
        hosts[name] = {"ansible_connection": "local", "ansible_python_interpreter": PYTHON,
                       "diy_env": {k: instance.env[k] for k in INSTANCE_KEYS},
                       "fake_dir": str(tmp_path / name)}
        os.makedirs(tmp_path / name)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    return {"inventory": str(inventory), "dir": tmp_path, "home": collection,
            "instances": {"h1": inst, "h2": second}}


def playbook(fleet, play: str, *args: str, extra: dict | None = None) -> tuple[dict, str]:
    """Run `ansible-playbook`; return the recap {host: {ok, changed, failed, ...}} and the output."""
    path = fleet["dir"] / "play.yml"
    path.write_text(textwrap.dedent(play))
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", fleet["inventory"], str(path), *args]
    if extra:
        cmd += ["-e", json.dumps(extra)]
    proc = subprocess.run(cmd, env=ansible_env(fleet["home"]), cwd=str(fleet["dir"]), capture_output=True,
                          text=True, timeout=180)
    out = proc.stdout + proc.stderr
    recap = {m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
             for m in re.finditer(r"^(h\d)\s+:\s+(.*)$", proc.stdout, re.M)}
    assert set(recap) == {"h1", "h2"}, out
    return recap, out


def changed(recap) -> dict:
    return {h: r["changed"] for h, r in recap.items()}


CONTAINER_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: the app container
      diy.docker.container:
        name: app
        image: busybox
        command: sleep 1000
        network: none
        init: true
        env: "{{ app_env | default({'A': '1'}) }}"
        labels: {tier: test}
        state: "{{ app_state | default('started') }}"
        instance_env: "{{ diy_env }}"
"""


def inspect(instance: Instance, name: str) -> dict | None:
    proc = instance.docker("inspect", name)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def test_container_converges_two_hosts(fleet):
    insts = fleet["instances"]
    recap, out = playbook(fleet, CONTAINER_PLAY, "--check")
    assert changed(recap) == {"h1": 1, "h2": 1}, out
    assert all(r["failed"] == 0 for r in recap.values()), out
    assert all(i.containers() == [] for i in insts.values()), "check mode created a container"

    recap, out = playbook(fleet, CONTAINER_PLAY)
    assert changed(recap) == {"h1": 1, "h2": 1}, out
    first = {h: inspect(i, "app") for h, i in insts.items()}
    for info in first.values():  # each host's own instance has it, running, as asked
        assert info["State"]["Running"], out
        assert "A=1" in info["Config"]["Env"] and info["Config"]["Labels"] == {"tier": "test"}
        assert info["HostConfig"]["NetworkMode"] == "none" and info["HostConfig"]["Init"] is True
    assert first["h1"]["Id"] != first["h2"]["Id"]

    recap, out = playbook(fleet, CONTAINER_PLAY)
    assert changed(recap) == {"h1": 0, "h2": 0}, out
    assert {h: inspect(i, "app")["Id"] for h, i in insts.items()} == {h: c["Id"] for h, c in first.items()}

    # a changed env re-creates, and --diff shows the env before and after
    recap, out = playbook(fleet, CONTAINER_PLAY, "--diff", extra={"app_env": {"A": "2"}})
    assert changed(recap) == {"h1": 1, "h2": 1}, out
    assert re.search(r'^-\s+"A": "1"', out, re.M) and re.search(r'^\+\s+"A": "2"', out, re.M), out
    for h, i in insts.items():
        info = inspect(i, "app")
        assert info["Id"] != first[h]["Id"] and "A=2" in info["Config"]["Env"] and info["State"]["Running"]

    recap, out = playbook(fleet, CONTAINER_PLAY, extra={"app_env": {"A": "2"}, "app_state": "stopped"})
    assert changed(recap) == {"h1": 1, "h2": 1}, out
    assert all(not inspect(i, "app")["State"]["Running"] for i in insts.values())

    recap, out = playbook(fleet, CONTAINER_PLAY, extra={"app_state": "absent"})
    assert changed(recap) == {"h1": 1, "h2": 1}, out
    assert all(inspect(i, "app") is None and i.containers() == [] for i in insts.values())


FAKE = r'''#!PYTHON
"""A stand-in for `diy-docker compose ... --json`: the contract's JSON, state in $FAKE_DIR."""
import json, os, sys
args = sys.argv[1:]
d = os.environ["FAKE_DIR"]
with open(os.path.join(d, "calls.log"), "a") as log:
    log.write(json.dumps(args) + "\n")
if os.environ.get("FAKE_FAIL"):
    sys.stderr.write("diy-docker: cannot read compose.yaml: unknown key 'servcies'\n")
    sys.exit(1)
name = args[args.index("-p") + 1]
text = "".join(open(args[i + 1]).read() for i, a in enumerate(args) if a == "-f")
state = os.path.join(d, name + ".state")
old = open(state).read() if os.path.exists(state) else None
if "up" in args:
    if old is None:
        plan = [{"kind": "network", "name": "default", "action": "create", "diff": {}},
                {"kind": "service", "name": "web", "action": "create", "diff": {}}]
    elif old != text:
        plan = [{"kind": "network", "name": "default", "action": "unchanged", "diff": {}},
                {"kind": "service", "name": "web", "action": "recreate",
                 "diff": {"environment": {"before": old.strip(), "after": text.strip()}}}]
    else:
        plan = [{"kind": "network", "name": "default", "action": "unchanged", "diff": {}},
                {"kind": "service", "name": "web", "action": "unchanged", "diff": {}}]
    if "--check" not in args:
        open(state, "w").write(text)
else:
    plan = [] if old is None else [{"kind": "service", "name": "web", "action": "remove", "diff": {}},
                                   {"kind": "network", "name": "default", "action": "remove", "diff": {}}]
    if old is not None and "--check" not in args:
        os.unlink(state)
n = sum(p["action"] != "unchanged" for p in plan)
print(json.dumps({"project": name, "changed": n > 0, "ok": len(plan) - n, "changed_count": n, "plan": plan}))
'''

STACK_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: the app stack
      diy.docker.stack:
        project_src: "{{ fake_dir }}"
        project_name: app
        state: "{{ stack_state | default('present') }}"
        remove_volumes: true
        executable: "{{ playbook_dir }}/fake-diy-docker"
        env: "{{ {'FAKE_DIR': fake_dir} | combine(fake_extra | default({})) }}"
"""


def calls(fleet, h: str) -> list[list[str]]:
    with open(fleet["dir"] / h / "calls.log") as f:
        return [json.loads(line) for line in f]


def test_stack_against_the_compose_contract(fleet):
    fake = fleet["dir"] / "fake-diy-docker"
    fake.write_text(FAKE.replace("PYTHON", PYTHON, 1))
    fake.chmod(0o755)
    for h in ("h1", "h2"):
        (fleet["dir"] / h / "compose.yaml").write_text("services: {web: {image: busybox}}\n")

    recap, out = playbook(fleet, STACK_PLAY, "--check")
    assert changed(recap) == {"h1": 1, "h2": 1}, out
    for h in ("h1", "h2"):
        args = calls(fleet, h)[-1]
        assert args[:5] == ["compose", "-f", str(fleet["dir"] / h / "compose.yaml"), "-p", "app"], args
        assert args[5:] == ["up", "-d", "--json", "--check"], args
        assert not os.path.exists(fleet["dir"] / h / "app.state")

    recap, out = playbook(fleet, STACK_PLAY)
    assert changed(recap) == {"h1": 1, "h2": 1}, out
    recap, out = playbook(fleet, STACK_PLAY)
    assert changed(recap) == {"h1": 0, "h2": 0}, out

    # h2's file changes: check + diff shows web's before/after and changes nothing
    (fleet["dir"] / "h2" / "compose.yaml").write_text("services: {web: {image: busybox, environment: [A=2]}}\n")
    recap, out = playbook(fleet, STACK_PLAY, "--check", "--diff")
    assert changed(recap) == {"h1": 0, "h2": 1}, out
    assert calls(fleet, "h2")[-1][-3:] == ["--json", "--check", "--diff"]
    assert re.search(r"^\+.*environment: \[A=2\]", out, re.M), out
    assert open(fleet["dir"] / "h2" / "app.state").read().startswith("services: {web: {image: busybox}}")

    recap, out = playbook(fleet, STACK_PLAY, extra={"stack_state": "absent"})
    assert changed(recap) == {"h1": 1, "h2": 1}, out
    for h in ("h1", "h2"):
        assert calls(fleet, h)[-1][5:] == ["down", "--json", "-v"]
        assert not os.path.exists(fleet["dir"] / h / "app.state")

    # a failing tool fails the task with its one line
    recap, out = playbook(fleet, STACK_PLAY, extra={"fake_extra": {"FAKE_FAIL": "1"}})
    assert {h: r["failed"] for h, r in recap.items()} == {"h1": 1, "h2": 1}, out
    assert "cannot bring up stack app: diy-docker: cannot read compose.yaml: unknown key 'servcies'" in out


REAL_STACK_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: the web stack, converged by the installed tool
      diy.docker.stack:
        project_src: "{{ fake_dir }}"
        project_name: web
        state: "{{ stack_state | default('present') }}"
        env: "{{ diy_env }}"
"""

REAL_STACK = """
services:
  web:
    image: busybox
    command: ["/bin/sh", "-c", "mkdir -p /www && echo hi > /www/index.html && httpd -f -p 80 -h /www"]
  client:
    image: busybox
    command: ["/bin/sh", "-c", "sleep 1000"]
    depends_on: [web]
"""


def test_stack_with_the_real_tool_on_two_hosts(fleet):
    """The same play converges two hosts: changed, then ok; check mode makes nothing; absent removes all."""
    for h in ("h1", "h2"):
        (fleet["dir"] / h / "compose.yaml").write_text(REAL_STACK)
    recap, out = playbook(fleet, REAL_STACK_PLAY, "--check")
    assert changed(recap) == {"h1": 1, "h2": 1}, out
    assert all(i.containers() == [] for i in fleet["instances"].values())
    recap, out = playbook(fleet, REAL_STACK_PLAY)
    assert changed(recap) == {"h1": 1, "h2": 1}, out
    for i in fleet["instances"].values():
        assert i.containers() == ["web-client-1", "web-web-1"]
    recap, out = playbook(fleet, REAL_STACK_PLAY)
    assert changed(recap) == {"h1": 0, "h2": 0}, out
    recap, out = playbook(fleet, REAL_STACK_PLAY, extra={"stack_state": "absent"})
    assert changed(recap) == {"h1": 1, "h2": 1}, out
    for i in fleet["instances"].values():
        assert i.containers() == [] and not os.path.exists(os.path.join(i.state_root, "networks"))


def load_facts():
    """module_utils/container_facts.py by path: pure, no ansible import, no root."""
    import importlib.util

    path = os.path.join(REPO, "ansible_collections/diy/docker/plugins/module_utils/container_facts.py")
    spec = importlib.util.spec_from_file_location("container_facts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# DiyDocker.record of `diy-docker run -d --name c3 -p 18080:80 -p 127.0.0.1:18081:81/udp -p 82 -v /tmp:/mnt:ro
# -v data:/d -v /anon --tmpfs /run:size=1m --ulimit nofile=1024:2048 --security-opt no-new-privileges -m 64m
# --cap-add NET_ADMIN --dns 1.1.1.1 --add-host a:1.2.3.4 --stop-signal USR1 --expose 90 --restart on-failure:3
# --entrypoint /bin/sh busybox -c 'sleep 1000'`, as inspect printed it
RECORD = {
    "add_hosts": [["a", "1.2.3.4"]], "cap_add": ["NET_ADMIN"], "cap_drop": [], "command": ["-c", "sleep 1000"],
    "cpus": None, "dns": ["1.1.1.1"], "entrypoint": ["/bin/sh"], "env": ["A=1"], "expose": ["90/tcp"],
    "hostname": None, "image": "busybox:latest", "init": False, "labels": {"x": "y"}, "memory": 67108864,
    "name": "c3", "network": "bridge", "pids_limit": None, "privileged": False,
    "publish": [{"container_port": 80, "host_ip": "0.0.0.0", "host_port": 18080, "proto": "tcp"},
                {"container_port": 81, "host_ip": "127.0.0.1", "host_port": 18081, "proto": "udp"},
                {"auto": True, "container_port": 82, "host_ip": "0.0.0.0", "host_port": 45538, "proto": "tcp"}],
    "publish_all": False, "read_only": False, "restart": {"max_retries": 3, "name": "on-failure"},
    "security_opt": {"no_new_privileges": True, "seccomp": "default"}, "shm_size": None,
    "stop_signal": "SIGUSR1", "ulimits": [{"hard": 2048, "name": "nofile", "soft": 1024}], "user": None,
    "volumes": [{"ro": True, "source": "/tmp", "target": "/mnt", "type": "bind"},
                {"anonymous": False, "name": "data", "ro": False, "source": "/s/volumes/data/_data",
                 "target": "/d", "type": "volume"},
                {"anonymous": True, "name": "0e5a80fe", "ro": False, "source": "/s/volumes/0e5a80fe/_data",
                 "target": "/anon", "type": "volume"},
                {"flags": ["nodev", "noexec", "nosuid"], "options": "size=1m", "ro": False, "target": "/run",
                 "type": "tmpfs"}],
    "workdir": None,
}


def test_facts_compare_options_with_the_record():
    facts = load_facts()
    params = {"image": "docker.io/library/busybox", "command": "-c 'sleep 1000'", "entrypoint": "/bin/sh",
              "env": {"A": 1}, "labels": {"x": "y"}, "memory": "64M", "cap_add": ["cap_net_admin"],
              "published_ports": ["82", "127.0.0.1:18081:81/udp", "18080:80"], "expose": ["90"],
              "volumes": ["/anon", "data:/d:rw", "/tmp/:/mnt:ro"], "restart": "on-failure:3",
              "security_opts": ["no-new-privileges"], "dns": ["1.1.1.1"], "etc_hosts": ["a=1.2.3.4"],
              "stop_signal": "usr1", "ulimits": ["nofile=1024:2048"], "network": "bridge", "hostname": "c3",
              "shm_size": "64m", "init": False, "read_only": False, "cpus": None}
    inspect = {"Name": "/c3", "DiyDocker": {"record": RECORD}}
    want = facts.wanted(params)
    assert "cpus" not in want  # not set, not compared
    assert facts.differences(want, facts.current(inspect, want)) == {}
    want = facts.wanted({**params, "env": {"A": "2"}, "published_ports": ["18080:80"], "memory": "1g"})
    assert facts.differences(want, facts.current(inspect, want)) == {
        "env": {"before": {"A": "1"}, "after": {"A": "2"}},
        "published_ports": {"before": ["0.0.0.0:18080:80/tcp", "0.0.0.0::82/tcp", "127.0.0.1:18081:81/udp"],
                            "after": ["0.0.0.0:18080:80/tcp"]},
        "memory": {"before": 67108864, "after": 1024 ** 3}}
    for bad in ({"memory": "lots"}, {"env": {"A": True}}, {"restart": "sometimes"}, {"published_ports": ["x:80"]},
                {"volumes": ["a:b:c:d"]}):
        with pytest.raises(ValueError):
            facts.wanted(bad)
