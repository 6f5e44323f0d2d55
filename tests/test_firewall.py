"""Coexistence with the host's firewall: a forward policy of drop (ufw's, Docker's, a hand-made
nft table, iptables-legacy's) must not break published ports, container-to-container traffic or
masquerade, and the firewall is exactly as we found it after the last container goes.

Every scenario runs in a network namespace standing for the host (the real host's firewall is
never touched): diy-docker runs there through `nsenter --net` (only the network namespace: its
mounts and cgroups are the host's, as a user's are), and an "outside" netns linked to it stands
for the internet, with no route back to the containers' subnet.
"""
from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import time

import pytest

from steps import netfilter as nf
from tests.conftest import REPO
from tests.dockerd import DOCKERD, HTTPD_BODY, Dockerd
from tests.test_network import FETCH, SERVER, Outside

PAGE = "mkdir -p /www && echo hello-from-srv > /www/index.html && exec httpd -f -p 80 -h /www"
ASK_SRV = 'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 3 srv 80 | tail -n 1'


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, check=check, **kw)


class FirewallHost:
    """A netns standing for the host, with a firewall of its own, and an outside netns linked to it."""

    def __init__(self, inst):
        self.inst = inst
        self.ns = f"diyt-{inst.id}-host"
        self.path = f"/run/netns/{self.ns}"
        sh("ip", "netns", "add", self.ns)
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"]):  # as Docker sets it
            self.run(*cmd)
        self.link = Outside(inst, host_ns=self.ns, tag="h", octet=100)
        self.outside, self.host_ip, self.ip = self.link.ns, self.link.host_ip, self.link.ip

    def run(self, *args, **kw) -> subprocess.CompletedProcess:
        """A command on the stand-in host."""
        return sh("nsenter", f"--net={self.path}", *args, **kw)

    def far(self, *args, **kw) -> subprocess.CompletedProcess:
        """A command on the outside host."""
        return sh("ip", "netns", "exec", self.outside, *args, **kw)

    def cli(self, *args, env: dict | None = None, fault: str | None = None, check: bool = False,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """`invoke ARGS...` on the stand-in host."""
        full = {**self.inst.env, **(env or {}), **({"DIY_DOCKER_FAULT": fault} if fault else {})}
        proc = subprocess.run(["nsenter", f"--net={self.path}", sys.executable, "-m", "invoke", *args],
                              cwd=REPO, env=full, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def firewall(self) -> str:
        """The stand-in host's whole firewall but our own tables, counters left out: nft's JSON
        (iptables-nft's tables included) and iptables-legacy-save when its tables are loaded."""
        items = json.loads(self.run("nft", "-j", "list", "ruleset").stdout)["nftables"]
        ours = {self.inst.nft_table}
        kept = [i for i in items if "metainfo" not in i and next(iter(i.values())).get(
            "table" if "table" not in i else "name") not in ours]
        text = json.dumps(kept, sort_keys=True)
        text = re.sub(r'"counter": \{"bytes": \d+, "packets": \d+\}', '"counter": {}', text)
        names = self.run("cat", "/proc/net/ip_tables_names").stdout.split()
        if "filter" in names:
            legacy = self.run("iptables-legacy-save", "-t", "filter").stdout
            text += "\n" + "\n".join(re.sub(r" \[\d+:\d+\]$", "", ln) for ln in legacy.splitlines()
                                     if not ln.startswith("#"))
        return text

    def residue(self) -> list[str]:
        """What of ours is left on the stand-in host: links, tables, rules."""
        prefix = self.inst.veth_prefix()
        links = [ln.split(":")[1].strip().split("@")[0] for ln in self.run("ip", "-o", "link").stdout.splitlines()]
        left = [f"link {n}" for n in links if n == self.inst.bridge or n.startswith(prefix)]
        left += [f"table {t}" for t in self.run("nft", "list", "tables").stdout.splitlines()
                 if t.split()[-1] == self.inst.nft_table]
        if f"diy-fw:{nf_mark(self.inst)}:" in self.firewall():
            left.append(f"rules diy-fw:{nf_mark(self.inst)}:")
        return left

    def fetch_from_far(self, port: int = 18080, timeout: float = 5) -> subprocess.CompletedProcess:
        return self.far(sys.executable, "-c", FETCH.replace("timeout=5", f"timeout={timeout}"),
                        f"http://{self.host_ip}:{port}/", check=False)

    def close(self) -> None:
        self.link.close()
        sh("ip", "netns", "del", self.ns, check=False)


@pytest.fixture
def fwhost(inst):
    host = FirewallHost(inst)
    yield host
    left = host.residue()
    host.close()
    assert not left, f"left on the stand-in host: {left}"


# --- the firewalls people have ------------------------------------------------------------

NFT_DROP = """table inet hostfw {
  chain forward { type filter hook forward priority filter; policy drop; }
}
"""
NFT_UFW = """table inet hostfw {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state invalid drop
    jump user_forward
  }
  chain user_forward { iifname "eth9" accept; }
}
"""
NFT_FIREWALLD = """table inet hostfw {
  chain filter_FORWARD {
    type filter hook forward priority filter + 10; policy accept;
    ct state { established, related } accept
    ct status dnat accept
    iifname "lo" accept
    reject with icmpx admin-prohibited
  }
}
"""


def nft_firewall(text: str):
    def make(host: FirewallHost) -> None:
        host.run("nft", "-f", "-", input=text)
    return make


def legacy_drop(host: FirewallHost) -> None:
    host.run("iptables-legacy", "-w", "-P", "FORWARD", "DROP")


ALL_FLOWS = {"out", "reply", "local", "back", "published"}
DROPPED = {"nft-ufw-like": {"out", "local", "published"}, "nft-firewalld-like-reject": {"out", "local"}}
SCENARIOS = {"nft-policy-drop": nft_firewall(NFT_DROP), "nft-ufw-like": nft_firewall(NFT_UFW),
             "nft-firewalld-like-reject": nft_firewall(NFT_FIREWALLD), "iptables-legacy-drop": legacy_drop}


def serve(host: FirewallHost, **kw) -> subprocess.CompletedProcess:
    return host.cli("run", "--name", "srv", "--detach", "--publish", "18080:80", "--", "/bin/sh", "-c", PAGE, **kw)


def wait_served(host: FirewallHost) -> str:
    for _ in range(30):
        got = host.fetch_from_far(timeout=2)
        if got.returncode == 0:
            return got.stdout.strip()
        time.sleep(0.2)
    return got.stderr.strip().splitlines()[-1]


def masqueraded_peer(host: FirewallHost) -> tuple[str, str]:
    """(what a container got from the outside host, the source address the outside host saw)."""
    server = subprocess.Popen(["ip", "netns", "exec", host.outside, sys.executable, "-c", SERVER],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "listening"
        p = host.cli("run", "--name", "out", "--rm", "--", "/bin/sh", "-c", f"nc -w 3 {host.ip} 9000 </dev/null")
        peer = server.stdout.readline().strip() if p.returncode == 0 else ""
        return p.stdout.strip(), peer
    finally:
        server.kill()
        server.wait()


def every_networked_feature_works(host: FirewallHost) -> None:
    assert wait_served(host) == "hello-from-srv"  # a published port, from a host with no route back
    p = host.cli("run", "--name", "cli", "--rm", "--", "/bin/sh", "-c", ASK_SRV)
    assert p.stdout.strip() == "hello-from-srv", p.stderr  # a container reaches another by name
    assert masqueraded_peer(host) == ("hello-from-outside", host.host_ip)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_networked_feature_through_a_dropping_firewall(inst, fwhost, scenario):
    SCENARIOS[scenario](fwhost)
    before = fwhost.firewall()
    serve(fwhost, check=True)
    try:
        every_networked_feature_works(fwhost)
        view = json.loads(fwhost.cli("network.inspect", "--json", check=True).stdout)["firewall"]
        assert view["mode"] == "auto" and view["drops"] and view["ours"]
        assert {d["flow"] for d in view["drops"]} == DROPPED.get(scenario, ALL_FLOWS)
    finally:
        fwhost.cli("rm", "srv", "--force", check=True)
    assert fwhost.firewall() == before  # the foreign chains exactly as we found them


def test_report_says_what_drops_and_off_says_nothing_and_neither_changes_the_firewall(inst, fwhost):
    nft_firewall(NFT_DROP)(fwhost)
    before = fwhost.firewall()
    p = serve(fwhost, env={"DIY_DOCKER_FIREWALL_COMPAT": "report"}, check=True)
    try:
        assert "WARNING: the host's firewall drops traffic of bridge" in p.stderr
        assert "nft inet hostfw chain forward (forward) drops published ports: policy drop" in p.stderr
        assert fwhost.fetch_from_far(timeout=2).returncode != 0  # what the user is warned of: it is dropped
        assert fwhost.firewall() == before
        view = json.loads(fwhost.cli("network.inspect", "--json", env={"DIY_DOCKER_FIREWALL_COMPAT": "report"},
                                     check=True).stdout)["firewall"]
        assert view["drops"] and not view["ours"]
        text = fwhost.cli("network.inspect", check=True).stdout
        assert "drops    published nft inet hostfw forward (forward): policy drop" in text
        p = fwhost.cli("run", "--name", "quiet", "--rm", "--", "/bin/true", env={"DIY_DOCKER_FIREWALL_COMPAT": "off"})
        assert p.returncode == 0 and "WARNING" not in p.stderr
        assert "firewall => firewall_compat: off" in p.stderr
    finally:
        fwhost.cli("rm", "srv", "--force", check=True)
    assert fwhost.firewall() == before


def test_a_drop_that_came_later_is_caught_by_repair_and_by_start(inst, fwhost):
    serve(fwhost, check=True)
    try:
        assert wait_served(fwhost) == "hello-from-srv"
        nft_firewall(NFT_DROP)(fwhost)  # a firewall (re)loaded after the container started
        before = fwhost.firewall()
        assert fwhost.fetch_from_far(timeout=2).returncode != 0
        plan = fwhost.cli("network.repair", "--check", check=True).stdout
        assert "would change" in plan and "rule published in nft inet hostfw forward" in plan
        assert fwhost.firewall() == before  # --check changed nothing
        fwhost.cli("network.repair", check=True)
        assert wait_served(fwhost) == "hello-from-srv"
        again = fwhost.cli("network.repair", check=True).stdout
        assert "changed=0" in again  # nothing left to repair
        fwhost.cli("stop", "srv", check=True)
        assert fwhost.firewall() == before  # the last container took its accepts
        fwhost.run("nft", "delete", "table", "inet", "hostfw")
        nft_firewall(NFT_UFW)(fwhost)  # another firewall meanwhile: start catches it
        before = fwhost.firewall()
        fwhost.cli("start", "srv", check=True)
        every_networked_feature_works(fwhost)
    finally:
        fwhost.cli("rm", "srv", "--force", check=True)
    assert fwhost.firewall() == before


@pytest.mark.parametrize("scenario,where,action", [("nft-policy-drop", "mid", "kill"),
                                                   ("iptables-legacy-drop", "mid", "kill"),
                                                   ("nft-policy-drop", "after", "fail"),
                                                   ("iptables-legacy-drop", "after", "kill")])
def test_a_fault_inside_the_firewall_step_then_rerun_and_teardown(inst, fwhost, scenario, where, action):
    SCENARIOS[scenario](fwhost)
    before = fwhost.firewall()
    faulted = serve(fwhost, fault=f"firewall.apply.{where}:{action}")
    assert faulted.returncode != 0 and "Traceback" not in faulted.stderr
    if action == "kill":
        assert fwhost.residue()  # killed with our rules made
    fwhost.cli("teardown", "srv", check=True)
    assert fwhost.firewall() == before and not fwhost.residue()
    faulted = serve(fwhost, fault=f"firewall.apply.{where}:{action}")
    assert faulted.returncode != 0
    if action == "kill":  # the same run again resumes
        serve(fwhost, check=True)
    else:  # the failed run rolled back: a new one starts clean
        assert fwhost.firewall() == before
        serve(fwhost, check=True)
    try:
        assert wait_served(fwhost) == "hello-from-srv"
        faulted = fwhost.cli("rm", "srv", "--force", fault=f"firewall.undo.{where}:{action}")
        assert faulted.returncode != 0
    finally:
        fwhost.cli("rm", "srv", "--force", check=True)
    assert fwhost.firewall() == before


def test_other_instances_rules_and_foreign_rules_are_left_alone(inst, fwhost):
    nft_firewall(NFT_DROP)(fwhost)
    fwhost.run("nft", "add", "rule", "inet", "hostfw", "forward", "iifname", "eth7", "accept", "comment",
               '"diy-fw:000000000000:other:out"')  # another instance's, by its mark
    before = fwhost.firewall()
    serve(fwhost, check=True)
    try:
        assert wait_served(fwhost) == "hello-from-srv"
        rules = fwhost.run("nft", "list", "chain", "inet", "hostfw", "forward").stdout
        assert 'comment "diy-fw:000000000000:other:out"' in rules
        first = [ln.strip() for ln in rules.splitlines() if "accept" in ln][0]
        assert f"diy-fw:{nf_mark(inst)}" in first  # ours are at the chain's head
    finally:
        fwhost.cli("rm", "srv", "--force", check=True)
    assert fwhost.firewall() == before


@pytest.mark.slow
@pytest.mark.skipif(DOCKERD is None, reason="needs Debian's docker.io (dockerd), as .ci/run installs")
def test_beside_a_real_dockerd_with_dockers_forward_drop(inst, fwhost):
    docker = Dockerd(fwhost.ns, f"/tmp/diyt-{inst.id}-d", f"diyt-{inst.id}-docker")
    try:
        docker.start()
        docker_ip = docker.run_httpd("dweb")
        fwhost.run("iptables", "-w", "-P", "FORWARD", "DROP")  # what Docker sets when it turns forwarding on
        before = fwhost.firewall()
        clash = fwhost.cli("run", "--name", "x", "--rm", "--", "/bin/true", env={"DIY_DOCKER_SUBNET": "172.17.9.0/24"})
        assert clash.returncode == 125 and "overlaps the host's address 172.17.0.1/16" in clash.stderr
        serve(fwhost, check=True)
        try:
            every_networked_feature_works(fwhost)
            ours = [ln for ln in fwhost.run("iptables-nft-save", "-t", "filter").stdout.splitlines() if "diy-fw:" in ln]
            assert all(ln.startswith("-A DOCKER-USER ") for ln in ours)  # nowhere else
            # the guards: Docker's bridges stay Docker's (its container's port 80 is not published)
            p = fwhost.cli("run", "--name", "peek", "--rm", "--", "/bin/sh", "-c",
                           f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 2 {docker_ip} 80')
            assert "diyfw" not in p.stdout
            flows = [re.search(r"diy-fw:\w+:\w+:([\w-]+)", ln).group(1) for ln in ours]
            assert set(flows[:2]) == {"guard-br", "guard-docker"} and set(flows[2:]) == ALL_FLOWS
            assert fwhost.run(sys.executable, "-c", FETCH, f"http://{docker_ip}/").stdout == HTTPD_BODY + "\n"
        finally:
            fwhost.cli("rm", "srv", "--force", check=True)
        assert fwhost.firewall() == before
        assert "dweb" in docker.docker("ps", "--format", "{{.Names}}").stdout  # Docker's container goes on
        assert fwhost.run(sys.executable, "-c", FETCH, f"http://{docker_ip}/").stdout == HTTPD_BODY + "\n"
    finally:
        docker.stop()


def nf_mark(inst) -> str:
    from steps.config import load
    from steps.nat import table_marker

    return table_marker(load({k: v for k, v in inst.env.items() if k.startswith("DIY_DOCKER")}))


# --- pure logic: reading rules and walking chains -----------------------------------------------

BRIDGE, SUBNET = "dt0", ipaddress.IPv4Network("10.1.2.0/24")
DOCKER_SAVE = """# Generated by iptables-nft-save v1.8.9
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [12:720]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"""


def flows_dropped(table: nf.Table, skip: str = "diy-fw:mine:") -> dict[str, bool]:
    """{flow: certain} of what the table drops."""
    return {b.flow: b.certain for b in nf.blockers([table], BRIDGE, SUBNET, skip)}


def test_dockers_forward_drop_drops_every_flow_of_ours_and_docker_user_is_the_place():
    from steps.firewall import place_for

    table = nf.iptables_table(DOCKER_SAVE, "iptables-nft")
    found = nf.blockers([table], BRIDGE, SUBNET, "diy-fw:mine:")
    assert {b.flow for b in found} == ALL_FLOWS
    assert all(b.why == "policy drop" and b.sure for b in found)
    # certain for what our bridge sends; what comes in may come from docker0, which Docker accepts
    assert {b.flow for b in found if b.certain} == {"out", "local"}
    assert {place_for(b)[0].chain for b in found} == {"DOCKER-USER"}


def test_our_own_accepts_are_left_out_of_the_walk_but_others_count():
    text = DOCKER_SAVE.replace("-A DOCKER-USER -j RETURN", "\n".join([
        '-A DOCKER-USER -s 10.1.2.0/24 -i dt0 ! -o dt0 -m comment --comment "diy-fw:mine:dt0:out" -j ACCEPT',
        "-A DOCKER-USER -s 10.1.2.0/24 -i dt0 -o dt0 -j ACCEPT",  # somebody else's accept
        "-A DOCKER-USER -j RETURN"]))
    table = nf.iptables_table(text, "iptables-nft")
    assert set(flows_dropped(table)) == {"out", "reply", "back", "published"}
    assert [r.comment for r in table.chains["DOCKER-USER"].rules][0] == "diy-fw:mine:dt0:out"


def test_ufw_like_established_accept_leaves_only_new_flows_dropped():
    text = "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n"
    assert flows_dropped(nf.iptables_table(text, "iptables-legacy")) == {"out": True, "local": True,
                                                                       "published": True}
    assert nf.iptables_table(text, "iptables-legacy").chains["FORWARD"].policy == "drop"


def test_matches_we_cannot_tell_are_doubts_not_verdicts():
    text = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp -m tcp --dport 22 -j DROP\nCOMMIT\n"
    dropped = flows_dropped(nf.iptables_table(text, "iptables-legacy"))
    assert dropped == dict.fromkeys(ALL_FLOWS, False)  # may drop: a port
    text = "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -i eth0 -j ACCEPT\n-A FORWARD -o br+ -j ACCEPT\nCOMMIT\n"
    dropped = flows_dropped(nf.iptables_table(text, "iptables-legacy"))
    # local (dt0 to dt0) matches neither accept: dropped; the others may come from eth0 or go to a br+
    assert dropped == {"out": False, "reply": False, "local": True, "back": False, "published": False}


def test_a_targeted_drop_is_not_ours_to_pass_and_nat_targets_never_drop():
    text = ("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -d 169.254.169.254/32 -j DROP\nCOMMIT\n"
            "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n"
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 "
            "-j MASQUERADE\n-A DOCKER -i docker0 -j RETURN\n-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 "
            "-j DNAT --to-destination 172.17.0.2:80\nCOMMIT\n")
    tables = nf.iptables_tables(text, "iptables-nft")
    found = nf.blockers(tables, BRIDGE, SUBNET, "diy-fw:mine:")
    assert {(b.table.name, b.flow, b.sure) for b in found} == {("filter", "out", False), ("filter", "reply", False)}


# Rulesets as nft itself writes them into JSON, read in a netns of the test's own.
RULESETS = {
    "vmap": ('chain f { type filter hook forward priority 0; policy accept; iifname vmap { "dt0" : drop }; }',
             {"out": "sure", "reply": "sure", "local": "sure"}),
    "maybe-return": ("chain chk { meta l4proto tcp return; accept; }\n"
                     "  chain f { type filter hook forward priority 0; policy drop; jump chk; }",
                     dict.fromkeys(ALL_FLOWS, "sure")),
    "maybe-drop-then-accept": ("chain f { type filter hook forward priority 0; policy accept;"
                               " meta l4proto tcp drop; accept; }", dict.fromkeys(ALL_FLOWS, "soft")),
    "limit": ("chain f { type filter hook forward priority 0; policy drop; limit rate 10/second accept; }",
              dict.fromkeys(ALL_FLOWS, "sure")),
    "ct-status-snat": ("chain f { type filter hook forward priority 0; policy drop; ct status snat accept; }",
                       dict.fromkeys(ALL_FLOWS, "sure")),
    "named-set": ('set bad { type ifname; elements = { "dt0" }; }\n'
                  "  chain f { type filter hook forward priority 0; policy accept; iifname @bad drop; }",
                  {"out": "soft", "reply": "soft", "local": "soft", "back": "soft", "published": "soft"}),
    "new-only": ('chain f { type filter hook forward priority 0; policy drop; iifname "dt0" ct state new accept;'
                 ' oifname "dt0" accept; }', {"reply": "sure"}),
    "ip6-only": ("chain f { type filter hook forward priority 0; policy accept; ip6 saddr ::/0 drop; }", {}),
    "ufw-like": (NFT_UFW.split("{", 1)[1].rsplit("}", 1)[0], {"out": "sure", "local": "sure", "published": "sure"}),
}


BRIDGE_RULESETS = {
    "bridge-forward-drop": ("chain f { type filter hook forward priority 0; policy drop; }", {"local": "sure"}),
    "bridge-input-port": ('chain i { type filter hook input priority 0; policy accept; iifname "veth*" drop; }',
                          {"out": "soft", "reply": "soft"}),
}


def blockers_in_netns(inst, text: str, family: str = "inet") -> dict[str, str]:
    ns = f"diyt-{inst.id}-rules"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=f"table {family} t {{\n  {text}\n}}\n")
        code = ("import ipaddress, json; from steps import netfilter as nf\n"
                "fw = nf.read_firewall('none')\n"
                "found = nf.blockers(fw.tables, 'dt0', ipaddress.IPv4Network('10.1.2.0/24'), 'diy-fw:mine:')\n"
                "print(json.dumps({b.flow: 'sure' if b.sure else 'soft' for b in found}))")
        return json.loads(sh("ip", "netns", "exec", ns, sys.executable, "-c", code, cwd=REPO).stdout)
    finally:
        sh("ip", "netns", "del", ns, check=False)


@pytest.mark.parametrize("case", sorted(RULESETS))
def test_the_walk_of_rules_as_nft_lists_them(inst, case):
    text, expected = RULESETS[case]
    assert blockers_in_netns(inst, text) == expected


@pytest.mark.parametrize("case", sorted(BRIDGE_RULESETS))
def test_bridge_family_chains_see_ports_and_only_what_crosses_their_hook(inst, case):
    text, expected = BRIDGE_RULESETS[case]
    assert blockers_in_netns(inst, text, "bridge") == expected
