"""Compose stacks against real containers, networks and nftables: up converges (a second up changes
nothing; a changed service alone is re-created), --check predicts the journal of the next up, stacks
are isolated from each other, depends_on waits for health, SIGKILL anywhere then up or down leaves
nothing, and bad files are refused in one line with nothing made."""
from __future__ import annotations

import json
import os
import random
import time
import urllib.request

import pytest

WEB_AND_CLIENT = """
services:
  web:
    image: busybox
    command: ["/bin/sh", "-c", "mkdir -p /www && echo hello-$${{MODE}} > /www/index.html && httpd -f -p 80 -h /www"]
    ports: ["{port}:80"]
    environment:
      MODE: ${{MODE:-one}}
  client:
    image: busybox
    command: ["/bin/sh", "-c", "sleep 1000"]
    depends_on: [web]
"""


def write(tmp_path, text: str, name: str = "compose.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def up(inst, path, *flags, project="s1", env=None, check=True, fault=None):
    return inst.cli("compose.up", "--file", path, "--project-name", project, "--detach", *flags, env=env,
                    check=check, timeout=120, fault=fault)


def plan_of(proc) -> dict:
    return json.loads(proc.stdout)


def ids(inst) -> dict:
    rows = json.loads(inst.cli("ps", "--all", "--json", check=True).stdout)
    return {r["name"]: r["id"] for r in rows}


def down(inst, path, project="s1", *flags):
    return inst.cli("compose.down", "--file", path, "--project-name", project, *flags, check=True, timeout=120)


def fetch(url: str) -> str:
    for _ in range(50):
        try:
            return urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


@pytest.fixture
def quiet_dns(inst):
    upstream = os.path.join(inst.root, "resolv.conf")
    open(upstream, "w").close()
    inst.env["DIY_DOCKER_RESOLV_CONF"] = upstream


def test_up_converges_and_recreates_only_what_changed(inst, tmp_path, quiet_dns):
    port = inst.free_port()
    path = write(tmp_path, WEB_AND_CLIENT.format(port=port))
    first = plan_of(up(inst, path, "--json"))
    assert first["changed"] and [(i["kind"], i["name"], i["action"]) for i in first["plan"]] == [
        ("network", "s1_default", "create"), ("service", "web", "create"), ("service", "client", "create")]
    try:
        assert fetch(f"http://127.0.0.1:{port}/") == "hello-one\n"  # the published port
        by_name = inst.cli("compose.exec", "client", "--file", path, "--project-name", "s1", "--", "/bin/sh", "-c",
                           "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc web 80 | tail -1")
        assert by_name.stdout == "hello-one\n", by_name.stderr  # the client reaches web by its service name
        before = ids(inst)
        again = plan_of(up(inst, path, "--json"))
        assert not again["changed"] and again["changed_count"] == 0 and again["ok"] == 3
        text = up(inst, path).stdout
        assert "RECAP [s1] compose up: ok=3 changed=0" in text
        assert ids(inst) == before  # nothing was touched
        changed = plan_of(up(inst, path, "--json", env={"MODE": "two"}))
        actions = {i["name"]: i["action"] for i in changed["plan"]}
        assert actions == {"s1_default": "unchanged", "web": "recreate", "client": "unchanged"}
        web = next(i for i in changed["plan"] if i["name"] == "web")
        assert web["diff"] == {"env": {"before": ["MODE=one"], "after": ["MODE=two"]}}
        after = ids(inst)
        assert after["s1-client-1"] == before["s1-client-1"] and after["s1-web-1"] != before["s1-web-1"]
        assert fetch(f"http://127.0.0.1:{port}/") == "hello-two\n"
        rows = json.loads(inst.cli("compose.ps", "--file", path, "--project-name", "s1", "--json",
                                   check=True).stdout)
        assert [(r["Service"], r["State"]) for r in rows] == [("web", "running"), ("client", "running")]
    finally:
        down(inst, path)
    assert inst.containers() == [] and not os.path.exists(os.path.join(inst.state_root, "networks"))


def test_check_predicts_exactly_what_up_does(inst, tmp_path):
    path = write(tmp_path, WEB_AND_CLIENT.format(port=inst.free_port()))
    try:
        for env in ({}, {}, {"MODE": "two"}):
            plan = plan_of(up(inst, path, "--json", "--check", env=env))
            assert plan["check"] is True
            journal = os.path.join(inst.state_root, "compose", "s1.jsonl")
            seen = sum(1 for _ in open(journal)) if os.path.exists(journal) else 0
            up(inst, path, env=env)
            done = [json.loads(line) for line in open(journal)][seen:] if os.path.exists(journal) else []
            predicted = [(i["kind"], i["name"], i["action"]) for i in plan["plan"] if i["action"] != "unchanged"]
            assert [(d["kind"], d["name"], d["action"]) for d in done] == predicted
            assert all(d["result"] == "changed" for d in done)
    finally:
        down(inst, path)


def test_check_changes_nothing(inst, tmp_path):
    path = write(tmp_path, WEB_AND_CLIENT.format(port=inst.free_port()))
    plan = plan_of(up(inst, path, "--json", "--check"))
    assert plan["changed_count"] == 3
    assert inst.containers() == [] and not os.path.exists(os.path.join(inst.state_root, "networks"))


def test_two_stacks_cannot_reach_each_other(inst, tmp_path, quiet_dns):
    one = write(tmp_path, "services:\n  a:\n    image: busybox\n    command: [sleep, '1000']\n", "one.yaml")
    up(inst, one, project="p1")
    up(inst, one, project="p2")
    try:
        nets = {n: json.loads(inst.cli("network.inspect", "--", n, check=True).stdout)[0] for n in
                ("p1_default", "p2_default")}
        p2_ip = next(iter(nets["p2_default"]["Containers"].values()))["IPv4Address"].split("/")[0]
        assert nets["p1_default"]["IPAM"]["Config"][0]["Subnet"] != nets["p2_default"]["IPAM"]["Config"][0]["Subnet"]
        p = inst.cli("exec", "p1-a-1", "--", "/bin/sh", "-c",
                     f"ping -c1 -W1 {p2_ip} >/dev/null 2>&1 && echo reached; "
                     "nslookup p2-a-1 127.0.0.11 >/dev/null 2>&1 && echo resolved; "
                     "ping -c1 -W3 a >/dev/null 2>&1 && echo own; echo done")
        assert p.stdout.split() == ["own", "done"], p.stdout  # its own service by name, nothing of p2
    finally:
        down(inst, one, "p1")
        down(inst, one, "p2")


def test_depends_on_service_healthy_waits(inst, tmp_path):
    path = write(tmp_path, """
services:
  db:
    image: busybox
    command: ["/bin/sh", "-c", "sleep 2; touch /tmp/ready; sleep 1000"]
    healthcheck:
      test: ["CMD", "test", "-e", "/tmp/ready"]
      interval: 500ms
      retries: 20
  app:
    image: busybox
    command: ["/bin/sh", "-c", "sleep 1000"]
    depends_on:
      db:
        condition: service_healthy
""")
    try:
        started = time.monotonic()
        up(inst, path)
        assert time.monotonic() - started >= 2.0  # app waited for db's check to pass
        rows = {r["Service"]: r for r in json.loads(inst.cli("compose.ps", "--file", path, "--project-name", "s1",
                                                             "--json", check=True).stdout)}
        assert rows["db"]["Health"] == "healthy" and rows["app"]["State"] == "running"
        db, app = (json.loads(inst.cli("inspect", f"s1-{s}-1", check=True).stdout)[0]["State"] for s in ("db", "app"))
        first_ok = min(e["End"] for e in db["Health"]["Log"] if e["ExitCode"] == 0)
        assert app["StartedAt"] >= first_ok[:19]
    finally:
        down(inst, path)


def test_sigkill_of_up_anywhere_then_up_or_down_leaves_nothing(inst, tmp_path):
    path = write(tmp_path, WEB_AND_CLIENT.format(port=inst.free_port()))
    rng = random.Random(4321)
    for _ in range(6):
        proc = inst.popen("compose.up", "--file", path, "--project-name", "s1", "--detach")
        time.sleep(rng.uniform(0.05, 1.5))
        proc.kill()
        proc.communicate()
        if rng.random() < 0.5:
            up(inst, path)  # converges from wherever the kill left it
            assert not plan_of(up(inst, path, "--json"))["changed"]
        else:
            down(inst, path)
            assert inst.containers() == []
    down(inst, path)
    assert inst.containers() == []


@pytest.mark.parametrize("point", ["layers.apply.mid", "cgroup.apply.mid", "veth.apply.mid", "nat.apply.mid",
                                   "launch.apply.mid", "image.apply.after"])
@pytest.mark.parametrize("action", ["kill", "fail", "enospc"])
def test_faults_inside_a_two_service_stack(inst, tmp_path, point, action):
    path = write(tmp_path, WEB_AND_CLIENT.format(port=inst.free_port()))
    if point.startswith("image."):
        import shutil

        shutil.rmtree(os.path.join(inst.state_root, "images"), ignore_errors=True)
    p = up(inst, path, fault=f"{point}:{action}", check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    again = plan_of(up(inst, path, "--json"))  # converges
    assert {i["name"] for i in again["plan"] if i["kind"] == "service"} == {"web", "client"}
    assert not plan_of(up(inst, path, "--json"))["changed"]
    down(inst, path)
    assert inst.containers() == []


@pytest.mark.parametrize("text,why", [
    ("services:\n  a:\n    image: busybox\n    build: .\n", "unsupported key services.a.build"),
    ("services:\n  a:\n    image: busybox\n    depends_on: [b]\n  b:\n    image: busybox\n    depends_on: [a]\n",
     "dependency cycle"),
    ("services:\n  a:\n    image: busybox\n    ports: ['99999:80']\n", "port"),
    ("services:\n  a:\n    image: ${NOPE}\n", "undefined variable NOPE"),
    ("services:\n  a:\n    image: busybox\n    networks: [n1, n2]\nnetworks:\n  n1:\n    ipam:\n      config:\n"
     "        - subnet: 10.77.0.0/24\n  n2:\n    ipam:\n      config:\n        - subnet: 10.77.0.128/25\n",
     "overlap"),
])
def test_bad_files_are_refused_in_one_line(inst, tmp_path, text, why):
    path = write(tmp_path, text)
    p = up(inst, path, check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    last = p.stderr.strip().splitlines()
    assert len(last) == 1 and why in last[0], p.stderr
    assert inst.containers() == [] and not os.path.exists(os.path.join(inst.state_root, "networks"))


def test_a_network_overlapping_the_instance_subnet_is_refused(inst, tmp_path):
    path = write(tmp_path, "services:\n  a:\n    image: busybox\nnetworks:\n  default:\n    ipam:\n      config:\n"
                           f"        - subnet: {inst.subnet}\n")
    p = up(inst, path, check=False)
    assert p.returncode != 0 and "overlaps network bridge" in p.stderr.strip().splitlines()[-1], p.stderr
    assert inst.containers() == [] and not os.path.exists(os.path.join(inst.state_root, "networks"))


WEB_AND_DB = """
name: shop
services:
  db:
    image: localdb:1
    command: ["/bin/sh", "-c", "echo \\"$${DB_GREETING}\\" > /var/lib/db/row; touch /tmp/ready; \\
      while true; do nc -l -p 5432 < /var/lib/db/row; done"]
    env_file: db.env
    volumes: ["dbdata:/var/lib/db"]
    healthcheck:
      test: ["CMD-SHELL", "test -e /tmp/ready"]
      interval: 500ms
      retries: 10
    stop_grace_period: 1s
  web:
    image: localdb:1
    command: ["/bin/sh", "-c", "mkdir -p /www && while true; do nc db 5432 > /www/index.html; sleep 1; done & \\
      httpd -f -p 80 -h /www"]
    ports: ["${WEB_PORT}:80"]
    depends_on:
      db:
        condition: service_healthy
    restart: unless-stopped
    mem_limit: 64m
    stop_grace_period: 1s
volumes:
  dbdata: {}
"""


def test_a_web_app_and_its_database_from_an_imported_image(inst, tmp_path, quiet_dns):
    """The kind of file people write: an imported image, .env and env_file, a named volume, a health
    check the web waits for; up, the page served from the database, a no-op up, down -v leaves nothing."""
    import tarfile

    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        tar.add("/bin/busybox", "bin/busybox")
        for applet in ("sh", "nc", "httpd", "mkdir", "echo", "touch", "test", "sleep", "true", "cat"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for d in ("tmp", "var/lib/db"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
    inst.cli("image.import", str(rootfs), "localdb:1", check=True)
    port = inst.free_port()
    (tmp_path / ".env").write_text(f"WEB_PORT={port}\n")
    (tmp_path / "db.env").write_text("DB_GREETING=rows-from-the-db\n")
    path = write(tmp_path, WEB_AND_DB)
    try:
        first = plan_of(inst.cli("compose.up", "--file", path, "--detach", "--json", check=True, timeout=120))
        assert [(i["kind"], i["name"], i["action"]) for i in first["plan"]] == [
            ("network", "shop_default", "create"), ("volume", "shop_dbdata", "create"),
            ("service", "db", "create"), ("service", "web", "create")]
        for _ in range(100):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
            except OSError:
                body = ""
            if body == "rows-from-the-db\n":
                break
            time.sleep(0.1)
        assert body == "rows-from-the-db\n"
        again = plan_of(inst.cli("compose.up", "--file", path, "--detach", "--json", check=True, timeout=120))
        assert again["changed_count"] == 0
    finally:
        inst.cli("compose.down", "--file", path, "--volumes", check=True, timeout=120)
    vols = json.loads(inst.cli("volume.ls", "--json", check=True).stdout)
    assert inst.containers() == [] and vols == []
    inst.cli("rmi", "localdb:1", check=True)


def test_a_changed_subnet_recreates_the_network_and_its_services(inst, tmp_path):
    text = ("services:\n  a:\n    image: busybox\n    command: [sleep, '1000']\nnetworks:\n  default:\n"
            "    ipam:\n      config:\n        - subnet: {}\n")
    path = write(tmp_path, text.format(inst.extra_subnet(5)))
    try:
        up(inst, path)
        write(tmp_path, text.format(inst.extra_subnet(6)))
        plan = plan_of(up(inst, path, "--json"))
        assert {(i["kind"], i["action"]) for i in plan["plan"]} == {("network", "recreate"), ("service", "recreate")}
        net = json.loads(inst.cli("network.inspect", "--", "s1_default", check=True).stdout)[0]
        assert net["IPAM"]["Config"][0]["Subnet"] == inst.extra_subnet(6) and len(net["Containers"]) == 1
    finally:
        down(inst, path)


def test_a_network_of_the_same_name_not_made_by_the_project_is_refused(inst, tmp_path):
    inst.cli("network.create", "s1_default", check=True)
    path = write(tmp_path, "services:\n  a:\n    image: busybox\n")
    try:
        p = up(inst, path, check=False)
        assert p.returncode != 0 and "exists and is not project s1's" in p.stderr.strip().splitlines()[-1]
        assert inst.containers() == []
    finally:
        inst.cli("network.rm", "s1_default", check=True)
