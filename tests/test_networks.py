"""User-defined networks (network create / ls / inspect / rm / prune, run --network NAME): each its
own bridge and subnet; names resolve within a network; containers of different networks cannot
reach each other; a container may join several. Traffic stays between the test's containers."""
from __future__ import annotations

import ipaddress
import json
import os
import time
import urllib.request

import pytest


@pytest.fixture
def quiet_dns(inst):
    """No upstream nameserver: the host's resolvers are never asked."""
    upstream = os.path.join(inst.root, "resolv.conf")
    open(upstream, "w").close()
    inst.env["DIY_DOCKER_RESOLV_CONF"] = upstream


def inspect_net(inst, name) -> dict:
    return json.loads(inst.cli("network.inspect", "--", name, check=True).stdout)[0]


def sh_in(inst, name, script):
    return inst.cli("exec", name, "--", "/bin/sh", "-c", script)


def test_create_ls_inspect_rm(inst):
    first = inst.cli("network.create", "front", check=True).stdout.strip()
    assert len(first) == 64
    inst.cli("network.create", "back", "--subnet", inst.extra_subnet(3), "--label", "tier=db", check=True)
    names = [r["name"] for r in json.loads(inst.cli("network.ls", "--json", check=True).stdout)]
    assert names == ["bridge", "host", "none", "back", "front"]
    back = inspect_net(inst, "back")
    assert back["IPAM"]["Config"][0]["Subnet"] == inst.extra_subnet(3) and back["Labels"] == {"tier": "db"}
    assert back["Containers"] == {} and back["Driver"] == "bridge"
    front = inspect_net(inst, "front")["IPAM"]["Config"][0]["Subnet"]
    assert ipaddress.ip_network(front).subnet_of(ipaddress.ip_network(inst.network_pool))  # cut from the pool
    bad = inst.cli("network.create", "again", "--subnet", inst.extra_subnet(3))
    assert bad.returncode != 0 and "overlaps network back" in bad.stderr.strip().splitlines()[-1]
    for name, why in (("bridge", "built in"), ("bad/name", "bad network name"), ("front", "already exists")):
        p = inst.cli("network.create", name)
        assert p.returncode != 0 and why in p.stderr, p.stderr
    assert [r["name"] for r in json.loads(inst.cli("network.ls", "--json", check=True).stdout)][3:] == \
        ["back", "front"]  # nothing half-made by the refusals
    p = inst.cli("network.rm", "bridge")
    assert p.returncode != 0 and "pre-defined" in p.stderr
    inst.cli("network.rm", "front", "--", "back", check=True)
    assert not os.path.exists(os.path.join(inst.state_root, "networks"))


def test_networks_are_isolated_and_names_resolve_within_one(inst, quiet_dns):
    inst.cli("network.create", "n1", check=True)
    inst.cli("network.create", "n2", check=True)
    for name, net in (("a1", "n1"), ("a2", "n1"), ("b1", "n2"), ("c1", "bridge")):
        inst.cli("run", "--name", name, "--detach", "--network", net, "--", "/bin/sleep", "1000", check=True)
    try:
        a1 = inspect_net(inst, "n1")
        ips = {v["Name"]: v["IPv4Address"].split("/")[0] for v in a1["Containers"].values()}
        assert sorted(ips) == ["a1", "a2"]
        same = sh_in(inst, "a2", "ping -c1 -W3 a1 >/dev/null && echo by-name")
        assert same.stdout.strip() == "by-name", same.stderr
        for other in ("b1", "c1"):
            p = sh_in(inst, other, f"nslookup a1 127.0.0.11 >/dev/null 2>&1 && echo resolved; "
                                   f"nslookup {ips['a1']} 127.0.0.11 2>&1 | grep -q a1 && echo its-name; "
                                   f"ping -c1 -W1 {ips['a1']} >/dev/null 2>&1 && echo reached; echo done")
            assert p.stdout.split() == ["done"], (other, p.stdout)  # not by name, address or reverse lookup
        p = sh_in(inst, "a2", f"nslookup {ips['a1']} 127.0.0.11")
        assert "a1" in p.stdout, p.stdout  # the reverse lookup answers within the network
        p = sh_in(inst, "a1", "ping -c1 -W1 b1 >/dev/null 2>&1 && echo reached; echo done")
        assert p.stdout.split() == ["done"]
        p = inst.cli("network.rm", "n1")
        assert p.returncode != 0 and "in use by container a1, a2" in p.stderr
    finally:
        for name in ("a1", "a2", "b1", "c1"):
            inst.cli("rm", name, "--force")
    out = inst.cli("network.prune", check=True).stdout
    assert "Deleted Networks:\nn1\nn2" in out
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith(inst.bridge_prefix())]


def test_a_container_on_two_networks_with_an_alias(inst, quiet_dns):
    inst.cli("network.create", "n1", check=True)
    inst.cli("network.create", "n2", check=True)
    inst.cli("run", "--name", "a1", "--detach", "--network", "n1", "--", "/bin/sleep", "1000", check=True)
    inst.cli("run", "--name", "b1", "--detach", "--network", "n2", "--", "/bin/sleep", "1000", check=True)
    inst.cli("run", "--name", "m", "--detach", "--network", "n1", "--network", "n2", "--network-alias", "svc",
             "--add-host", "gw:host-gateway", "--", "/bin/sleep", "1000", check=True)
    try:
        p = sh_in(inst, "m", "ip -4 -o addr show | awk '{print $2}' | sort | tr '\\n' ' '; "
                             "ping -c1 -W3 a1 >/dev/null && echo a1; ping -c1 -W3 b1 >/dev/null && echo b1")
        assert p.stdout.split() == ["eth0", "eth1", "lo", "a1", "b1"], p.stdout + p.stderr
        p = sh_in(inst, "a1", "ping -c1 -W3 svc >/dev/null && echo svc")
        assert p.stdout.strip() == "svc", (p.stdout, p.stderr)  # the alias, on the network it was given for
        p = sh_in(inst, "b1", "nslookup svc 127.0.0.11 >/dev/null 2>&1 && echo svc; echo done")
        assert p.stdout.split() == ["done"]  # ... and not on m's other network, as Docker's
        gateway = inspect_net(inst, "n1")["IPAM"]["Config"][0]["Gateway"]
        p = sh_in(inst, "m", "grep -w gw /etc/hosts")
        assert p.stdout.split()[0] == gateway  # host-gateway: the primary network's gateway
        p = sh_in(inst, "a1", "ping -c1 -W1 b1 >/dev/null 2>&1 && echo reached; echo done")
        assert p.stdout.split() == ["done"]  # m joining both does not join them
        info = json.loads(inst.cli("inspect", "m", check=True).stdout)[0]
        assert sorted(info["NetworkSettings"]["Networks"]) == ["n1", "n2"]
    finally:
        for name in ("a1", "b1", "m"):
            inst.cli("rm", name, "--force")
        inst.cli("network.rm", "n1", "--", "n2")


def test_a_published_port_on_a_user_network(inst):
    port = inst.free_port()
    inst.cli("network.create", "web", check=True)
    inst.cli("run", "--name", "w", "--detach", "--network", "web", "--publish", f"{port}:80", "--",
             "/bin/sh", "-c", "mkdir /www && echo hello-web > /www/index.html && httpd -f -p 80 -h /www",
             check=True)
    try:
        body = ""
        for _ in range(50):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert body == "hello-web\n"
    finally:
        inst.cli("rm", "w", "--force")
        inst.cli("network.rm", "web")


def test_an_alias_needs_a_user_network(inst):
    p = inst.cli("run", "--name", "x", "--network-alias", "db", "--", "/bin/true")
    assert p.returncode != 0 and "aliases are for user-defined networks" in p.stderr.strip().splitlines()[-1]
    assert inst.containers() == []


def test_a_missing_network_is_refused_before_anything_is_made(inst):
    p = inst.cli("run", "--name", "x", "--network", "nope", "--", "/bin/true")
    assert p.returncode == 125 and p.stderr.strip().splitlines()[-1] == \
        "diy-docker: no such network: nope (see invoke network.ls)"
    assert inst.containers() == []
