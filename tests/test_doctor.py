"""system doctor: what an instance left on the host without a record (made by SIGKILL at the worst
points, and by hand), records whose objects are half there, and foreign look-alikes left alone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest


def doctor(inst, *flags) -> tuple[int, dict]:
    proc = inst.cli("system.doctor", "--json", *flags)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def kinds(report: dict, key: str = "found") -> set[str]:
    return {f["what"] for f in report[key] or []}


def cgroup_dirs(parent: str, name: str) -> list[str]:
    from tests import host

    return [os.path.join(r, parent, name) for r in host.cgroup_roots()
            if os.path.isdir(os.path.join(r, parent, name))]


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split(" ")[4] == path for line in f)


def test_clean_instance_reports_nothing(inst):
    inst.cli("run", "--name", "up", "--detach", "--", "/bin/sleep", "1000", check=True)
    inst.cli("run", "--name", "done", "--network", "none", "--", "/bin/true", check=True)
    try:
        code, report = doctor(inst)
        assert (code, report["found"]) == (0, [])
        text = inst.docker("system", "doctor", check=True).stdout
        assert text.startswith("nothing found")
    finally:
        inst.cli("rm", "up", "--force", check=True)
        inst.cli("rm", "done", check=True)
    assert inst.docker("system", "doctor").returncode == 0


# What a run killed at each point leaves (its record then deleted by hand, so nothing has a record).
KILLED = {"cgroup.apply.mid": {"mount", "cgroup", "file"},
          "veth.apply.mid": {"mount", "cgroup", "file"},
          "nat.apply.mid": {"mount", "cgroup", "file", "host veth", "lease"},
          "launch.apply.after": {"mount", "cgroup", "file", "host veth", "lease", "nft rule", "monitor"}}


@pytest.mark.parametrize("point", sorted(KILLED))
def test_orphans_of_a_killed_run_are_found_and_fixed(inst, point):
    inst.cli("run", "--name", "keep", "--detach", "--", "/bin/sleep", "1000", check=True)
    try:
        killed = inst.cli("run", "--name", "k", "--detach", "--", "/bin/sleep", "1000", fault=f"{point}:kill")
        assert killed.returncode == -signal.SIGKILL or killed.returncode == 137, killed.stderr
        os.unlink(os.path.join(inst.state_root, "containers", "k", "info.json"))
        code, report = doctor(inst)
        assert code == 1
        assert {f["owner"] for f in report["found"]} == {"k"}  # the running one's objects are its own
        assert KILLED[point] <= kinds(report), report["found"]
        text = inst.cli("system.doctor").stdout
        assert "cgroup " in text and "no container k is recorded" in text
        code, fixed = doctor(inst, "--fix")
        assert code == 0 and fixed["left"] == [], fixed
        assert inst.containers() == ["keep"] and cgroup_dirs(inst.cgroup_parent, "k") == []
        assert cgroup_dirs(inst.cgroup_parent, "keep")  # exactly those: the other container is untouched
        assert doctor(inst) == (0, {"found": [], "fixed": [], "left": None})
        assert json.loads(inst.cli("ps", "--json", check=True).stdout)[0]["state"] == "running"
    finally:
        inst.cli("rm", "keep", "--force", check=True)
        inst.cli("teardown", "k")


def ours_by_hand(inst) -> dict:
    """Objects made to look like ours: each carries one of the instance's marks."""
    from steps.facts import cgroup_hierarchies

    prefix = inst.veth_prefix()
    made = {"cgroup": os.path.join(cgroup_hierarchies()[0].root, inst.cgroup_parent, "ghost"),
            "veth": prefix + "0fade01", "mount": os.path.join(inst.state_root, "containers", "ghost", "merged"),
            "staged": os.path.join(inst.state_root, "images", "staged", "ab" * 32),
            "tmp": os.path.join(inst.state_root, "images", "tmp", "999999999-1-dead"),
            "volume": os.path.join(inst.state_root, "volumes", "half")}
    os.makedirs(made["cgroup"])
    subprocess.run(["ip", "link", "add", made["veth"], "type", "veth", "peer", "name", prefix + "0fade02"],
                   check=True)
    os.makedirs(made["mount"])  # where the layers stage mounts a rootfs
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", made["mount"]], check=True)
    for d in ("staged", "tmp"):
        os.makedirs(made[d])
        with open(os.path.join(made[d], "f"), "w") as f:
            f.write("x")
    os.makedirs(os.path.join(made["volume"], "_data"))
    return made


def instance_config(inst, **override):
    from steps import config

    env = {k: v for k, v in inst.env.items() if k.startswith("DIY_DOCKER")}
    return config.load({**env, **override})


def nft(*commands: str) -> None:
    subprocess.run(["nft", "-f", "-"], input="\n".join(commands) + "\n", text=True, check=True)


def firewall_table(table: str, comment: str) -> None:
    """A host table whose forward chain holds one accept with comment (as our firewall stage marks them)."""
    nft(f"add table ip {table}",
        f"add chain ip {table} forward_in {{ type filter hook forward priority 10; policy accept; }}",
        f'add rule ip {table} forward_in iifname "nosuchif0" accept comment "{comment}"')


def network_by_hand(inst) -> dict:
    """Our bridge (its ifalias is our mark), our nft table (its owner rule) and a firewall accept
    with our diy-fw: prefix, and no container holding a lease."""
    from steps import firewall, nat
    from steps import network as net

    cfg = instance_config(inst)
    subprocess.run(["ip", "link", "add", inst.bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", inst.bridge, "alias", net.marker(cfg)], check=True)
    nft(f"add table ip {inst.nft_table}", f"add chain ip {inst.nft_table} owner",
        f'add rule ip {inst.nft_table} owner counter comment "diy:owner:{nat.table_marker(cfg)}"')
    fw = f"diyfw_{inst.id}"
    firewall_table(fw, f"{firewall.prefix(cfg)}{inst.bridge}:out")
    return {"fw": fw}


def store_by_hand(inst) -> dict:
    """Beside the built busybox image: a layer no record uses, a dangling short link, a record
    missing its layer (and its name), and a temp file of a writer that is gone."""
    images = os.path.join(inst.state_root, "images")
    made = {"layer": os.path.join(images, "layers", "cd" * 32), "link": os.path.join(images, "l", "ef" * 8),
            "record": os.path.join(images, "images", "12" * 32 + ".json"),
            "temp": os.path.join(images, "repositories.json.tmp-999999999")}
    os.makedirs(made["layer"])
    os.symlink(os.path.join("..", "layers", "ef" * 32), made["link"])
    with open(made["record"], "w") as f:
        json.dump({"id": "sha256:" + "12" * 32, "layers": ["sha256:" + "34" * 32]}, f)
    with open(os.path.join(images, "repositories.json")) as f:
        index = json.load(f)
    with open(os.path.join(images, "repositories.json"), "w") as f:
        json.dump({**index, "docker.io/library/broken:1": "sha256:" + "12" * 32}, f)
    with open(made["temp"], "w") as f:
        f.write("{}")
    return made


def test_objects_made_by_hand_with_our_marks_are_found_and_fixed(inst):
    inst.cli("run", "--rm", "--network", "none", "--", "/bin/true", check=True)  # the busybox image, built
    made = ours_by_hand(inst)
    made.update(store_by_hand(inst))
    fw = network_by_hand(inst)["fw"]
    try:
        code, report = doctor(inst)
        assert code == 1
        assert {"cgroup", "host veth", "mount", "staged layer", "image work dir", "volume dir", "layer",
                "layer link", "image record", "temp file", "bridge", "nft table", "firewall rule"} \
            <= kinds(report), report["found"]
        wheres = {f["where"] for f in report["found"]}
        assert {made[k] for k in made} <= wheres
        assert all(f["fix"] for f in report["found"])  # each has its undo
        code, fixed = doctor(inst, "--fix")
        assert code == 0 and fixed["left"] == [], fixed
        assert not os.path.exists(made["cgroup"]) and not link_exists(made["veth"])
        assert not mounted(made["mount"])
        for d in ("staged", "tmp", "volume", "layer", "record", "temp"):
            assert not os.path.exists(made[d])
        assert not os.path.lexists(made["link"]) and not link_exists(inst.bridge)
        assert subprocess.run(["nft", "list", "table", "ip", inst.nft_table], capture_output=True).returncode != 0
        assert "diy-fw:" not in subprocess.run(["nft", "list", "table", "ip", fw], capture_output=True,
                                               text=True).stdout
        images = json.loads(inst.cli("images", "--json", check=True).stdout)
        assert [i["name"] for i in images] == ["busybox"]  # the sound image is untouched
        inst.cli("run", "--rm", "--network", "none", "--", "/bin/true", check=True)
        assert inst.docker("system", "doctor").returncode == 0
    finally:
        subprocess.run(["nft", "delete", "table", "ip", fw], capture_output=True)
        subprocess.run(["nft", "delete", "table", "ip", inst.nft_table], capture_output=True)
        subprocess.run(["ip", "link", "del", inst.bridge], capture_output=True)
        subprocess.run(["umount", "-l", made["mount"]], capture_output=True)
        subprocess.run(["ip", "link", "del", made["veth"]], capture_output=True)
        if os.path.isdir(made["cgroup"]):
            os.rmdir(made["cgroup"])
            os.rmdir(os.path.dirname(made["cgroup"]))


def foreign_prefix(inst) -> str:
    from steps.names import veth_prefix

    return veth_prefix(instance_config(inst, DIY_DOCKER_STATE_ROOT=inst.state_root + "-other"))


def test_foreign_look_alikes_are_left_alone(inst):
    from steps.facts import cgroup_hierarchies

    other = f"{inst.cgroup_parent}-other"
    cg = os.path.join(cgroup_hierarchies()[0].root, other, "ghost")
    link = foreign_prefix(inst) + "0fade01"
    mount = inst.root + "/state-foreign/m"  # its path starts as our state root's does, and is not below it
    disk = os.path.join(inst.state_root, "admin-disk")  # below our root, where no step mounts: an admin's
    os.makedirs(cg)
    os.makedirs(disk)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", disk], check=True)
    subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", link[:-1] + "2"], check=True)
    os.makedirs(mount)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", mount], check=True)
    subprocess.run(["nft", "add", "table", "ip", inst.nft_table], check=True)  # our table's name, not our mark
    subprocess.run(["ip", "link", "add", inst.bridge, "type", "bridge"], check=True)  # our bridge's name, no ifalias
    from steps import firewall

    fw = f"diyfw_{inst.id}"
    firewall_table(fw, f"{firewall.prefix(instance_config(inst, DIY_DOCKER_STATE_ROOT='/elsewhere'))}x:out")
    try:
        assert doctor(inst) == (0, {"found": [], "fixed": [], "left": None})
        code, _ = doctor(inst, "--fix")
        assert code == 0
        assert os.path.isdir(cg) and link_exists(link) and mounted(mount) and mounted(disk)
        assert subprocess.run(["nft", "list", "table", "ip", inst.nft_table], capture_output=True).returncode == 0
        assert link_exists(inst.bridge)
        assert "diy-fw:" in subprocess.run(["nft", "list", "table", "ip", fw], capture_output=True, text=True).stdout
    finally:
        subprocess.run(["nft", "delete", "table", "ip", fw], capture_output=True)
        subprocess.run(["ip", "link", "del", inst.bridge], capture_output=True)
        subprocess.run(["nft", "delete", "table", "ip", inst.nft_table], capture_output=True)
        subprocess.run(["umount", "-l", mount], capture_output=True)
        subprocess.run(["umount", "-l", disk], capture_output=True)
        subprocess.run(["ip", "link", "del", link], capture_output=True)
        os.rmdir(cg)
        os.rmdir(os.path.dirname(cg))


def kill_monitor_and_init(inst, name: str, init: bool = True) -> None:
    with open(os.path.join(inst.run_root, "containers", name, "state.json")) as f:
        rt = json.load(f)
    pids = (rt["monitor_pid"], rt["init_pid"]) if init else (rt["monitor_pid"],)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{p}") for p in pids):
        assert time.monotonic() < deadline
        time.sleep(0.02)


HALF = {"monitor-and-init-killed": {"mount", "cgroup", "host veth", "lease", "nft rule", "runtime dir"},
        "monitor-killed-then-stop-killed-in-cgroup-undo": {"mount", "cgroup"}}


@pytest.mark.parametrize("how", sorted(HALF))
def test_half_there_record_is_stopped_cleanly_and_starts_again(inst, tmp_path, how):
    inst.cli("run", "--name", "h", "--detach", "--volume", f"{tmp_path}:/data", "--", "/bin/sleep", "1000",
             check=True)
    try:
        if how == "monitor-and-init-killed":  # its record says it runs; nothing does
            kill_monitor_and_init(inst, "h")
        else:  # no monitor to finish what the killed stop began
            kill_monitor_and_init(inst, "h", init=False)
            assert inst.cli("stop", "h", "--time", "1", fault="cgroup.undo.mid:kill").returncode != 0
        code, report = doctor(inst)
        assert code == 1
        assert HALF[how] <= kinds(report), report["found"]
        assert {f["fix"] for f in report["found"]} == {"stop h"}
        code, fixed = doctor(inst, "--fix")
        assert code == 0 and fixed["left"] == [], fixed
        assert cgroup_dirs(inst.cgroup_parent, "h") == []
        assert not mounted(os.path.join(inst.state_root, "containers", "h", "merged"))
        state = json.loads(inst.cli("ps", "--all", "--json", check=True).stdout)[0]["state"]
        assert state.startswith("exited"), state
        inst.cli("start", "h", check=True)
        state = json.loads(inst.cli("ps", "--json", check=True).stdout)[0]["state"]
        assert state == "running"
        assert doctor(inst)[0] == 0
    finally:
        inst.cli("rm", "h", "--force", check=True)


def test_a_record_whose_own_objects_are_gone_is_said_and_left_to_the_user(inst):
    import shutil

    inst.cli("run", "--name", "lost", "--network", "none", "--", "/bin/true", check=True)
    try:
        shutil.rmtree(os.path.join(inst.state_root, "containers", "lost", "upper"))
        code, report = doctor(inst)
        assert code == 1 and [(f["what"], f["owner"], f["fix"]) for f in report["found"]] \
            == [("container layer", "lost", "")]
        code, fixed = doctor(inst, "--fix")
        assert code == 1 and fixed["left"] == report["found"]  # only the user knows what to do with it
        assert "--fix leaves it" in inst.cli("system.doctor").stdout
    finally:
        inst.cli("rm", "lost", check=True)
    assert doctor(inst)[0] == 0


# --- user-defined networks (steps/networks.py) --------------------------------------------------

def network_variant(inst, name: str, **override):
    from steps import networks

    return networks.variant(instance_config(inst, **override), name, strict=False)


def links_with(prefix: str) -> list[str]:
    return sorted(x for x in os.listdir("/sys/class/net") if x.startswith(prefix))


def table_exists(family: str, table: str) -> bool:
    return subprocess.run(["nft", "list", "table", family, table], capture_output=True).returncode == 0


@pytest.mark.parametrize("point", ["nat.apply.mid", "launch.apply.after"])
def test_orphans_of_a_killed_run_on_a_user_network_are_found_and_fixed(inst, point):
    from steps.names import veth_prefix

    inst.cli("network.create", "n1", check=True)
    n1 = network_variant(inst, "n1")
    inst.cli("run", "--name", "keep", "--detach", "--network", "n1", "--", "/bin/sleep", "1000", check=True)
    try:
        killed = inst.cli("run", "--name", "k", "--detach", "--network", "n1", "--", "/bin/sleep", "1000",
                          fault=f"{point}:kill")
        assert killed.returncode in (-signal.SIGKILL, 137), killed.stderr
        os.unlink(os.path.join(inst.state_root, "containers", "k", "info.json"))
        code, report = doctor(inst)
        assert code == 1
        assert {f["owner"] for f in report["found"]} == {"k"}  # keep's, its network's, the resolver: its own
        assert KILLED[point] <= kinds(report), report["found"]
        veths = [f["where"] for f in report["found"] if f["what"] == "host veth"]
        assert len(veths) == 1 and veths[0].startswith(veth_prefix(n1)), veths  # its end on n1: dw...
        assert any(f["where"].endswith(" on n1 of k in leases.json") for f in report["found"])
        code, fixed = doctor(inst, "--fix")
        assert code == 0 and fixed["left"] == [], fixed
        assert inst.containers() == ["keep"] and cgroup_dirs(inst.cgroup_parent, "k") == []
        assert not link_exists(veths[0]) and len(links_with(veth_prefix(n1))) == 1  # keep's end stays
        assert link_exists(n1.bridge) and table_exists("ip", n1.nft_table)  # keep still holds a lease on n1
        assert json.loads(inst.cli("ps", "--json", check=True).stdout)[0]["state"] == "running"
        assert doctor(inst) == (0, {"found": [], "fixed": [], "left": None})
    finally:
        inst.cli("rm", "keep", "--force", check=True)
        inst.cli("system.doctor", "--fix")  # k's objects on n1 (teardown k undoes the default network only)
        inst.cli("teardown", "k")
        drop_network_by_hand(n1)
        inst.cli("network.rm", "n1", check=True)
    assert not link_exists(n1.bridge) and not table_exists("ip", n1.nft_table)


def drop_network_by_hand(v) -> None:
    """After a failed test: a user network's bridge and tables, whatever is left of them."""
    subprocess.run(["ip", "link", "del", v.bridge], capture_output=True)
    for fam in ("ip", "bridge"):
        subprocess.run(["nft", "delete", "table", fam, v.nft_table], capture_output=True)


def test_a_killed_last_container_takes_its_user_network_with_it(inst):
    """The last container of a network, killed and its record deleted: its rm pipeline undoes its
    veth on the network, and with it (its last lease) the network's bridge, tables and leases;
    the network's record stays, as Docker keeps a network without containers."""
    inst.cli("network.create", "n1", check=True)
    n1 = network_variant(inst, "n1")
    try:
        killed = inst.cli("run", "--name", "x", "--detach", "--network", "n1", "--", "/bin/sleep", "1000",
                          fault="launch.apply.after:kill")
        assert killed.returncode in (-signal.SIGKILL, 137), killed.stderr
        os.unlink(os.path.join(inst.state_root, "containers", "x", "info.json"))
        assert link_exists(n1.bridge) and table_exists("bridge", n1.nft_table)
        code, fixed = doctor(inst, "--fix")
        assert code == 0 and fixed["left"] == [], fixed
        assert {o["target"] for o in fixed["fixed"]} == {"x"}
        assert not link_exists(n1.bridge) and links_with(n1.bridge[:6]) == []
        assert not table_exists("ip", n1.nft_table) and not table_exists("bridge", n1.nft_table)
        assert not os.path.exists(os.path.join(inst.run_root, "networks", "n1"))
        assert os.path.exists(os.path.join(inst.state_root, "networks", "n1.json"))  # a network, not a leftover
        assert doctor(inst) == (0, {"found": [], "fixed": [], "left": None})
        inst.cli("run", "--rm", "--network", "n1", "--", "/bin/true", check=True)  # and it works again
    finally:
        inst.cli("system.doctor", "--fix")
        inst.cli("teardown", "x")
        drop_network_by_hand(n1)
        inst.cli("network.rm", "n1", check=True)


def user_network_by_hand(inst, name: str) -> None:
    """What a user network holds while a container is attached, and no container holding a lease:
    its bridge (our ifalias), its tables in both families (our owner rule), an empty leases file."""
    from steps import nat
    from steps import network as net

    v = network_variant(inst, name)
    subprocess.run(["ip", "link", "add", v.bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", v.bridge, "alias", net.marker(v)], check=True)
    owned_table(v.nft_table, nat.table_marker(v))
    d = os.path.join(inst.run_root, "networks", name)
    os.makedirs(d)
    with open(os.path.join(d, "leases.json"), "w") as f:
        json.dump({"leases": {}, "aliases": {}}, f)


def owned_table(table: str, owner: str) -> None:
    nft(*(f"add table {fam} {table}\nadd chain {fam} {table} owner\n"
          f'add rule {fam} {table} owner counter comment "diy:owner:{owner}"' for fam in ("ip", "bridge")))


def test_a_user_network_left_without_containers_is_found_and_fixed(inst):
    """n1 (its record kept), n2 (its record gone: known by its bridge's ifalias and leases dir),
    and a table of ours by its owner mark and name pattern alone: each found, each removed as its
    last container's veth undo removes it; n1's record stays."""
    from steps import firewall, nat

    inst.cli("network.create", "n1", check=True)
    inst.cli("network.create", "n2", check=True)
    n1, n2 = network_variant(inst, "n1"), network_variant(inst, "n2")
    inst.cli("network.rm", "n2", check=True)
    lone = f"{inst.nft_table}_n0fade0aa"
    fw = f"diyfw_{inst.id}"
    try:
        user_network_by_hand(inst, "n1")
        user_network_by_hand(inst, "n2")
        owned_table(lone, nat.table_marker(n1))
        firewall_table(fw, f"{firewall.prefix(n1)}out")
        code, report = doctor(inst)
        assert code == 1
        wheres = {(f["what"], f["where"]) for f in report["found"]}
        for v in (n1, n2):
            assert {("bridge", v.bridge), ("nft table", f"ip {v.nft_table}"), ("nft table", f"bridge {v.nft_table}"),
                    ("file", os.path.join(inst.run_root, "networks", v.network_name, "leases.json"))} <= wheres
        assert {("nft table", f"ip {lone}"), ("nft table", f"bridge {lone}")} <= wheres
        assert "firewall rule" in kinds(report)
        assert all(f["fix"] and not f["owner"] for f in report["found"])
        assert not any("n1.json" in f["where"] for f in report["found"])  # a record alone is no orphan
        code, fixed = doctor(inst, "--fix")
        assert code == 0 and fixed["left"] == [], fixed
        for v in (n1, n2):
            assert not link_exists(v.bridge)
            assert not table_exists("ip", v.nft_table) and not table_exists("bridge", v.nft_table)
        assert not table_exists("ip", lone) and not table_exists("bridge", lone)
        assert not os.path.exists(os.path.join(inst.run_root, "networks"))
        assert "diy-fw:" not in subprocess.run(["nft", "list", "table", "ip", fw], capture_output=True,
                                               text=True).stdout
        assert os.path.exists(os.path.join(inst.state_root, "networks", "n1.json"))
        assert doctor(inst) == (0, {"found": [], "fixed": [], "left": None})
    finally:
        subprocess.run(["nft", "delete", "table", "ip", fw], capture_output=True)
        for fam in ("ip", "bridge"):
            subprocess.run(["nft", "delete", "table", fam, lone], capture_output=True)
        for v in (n1, n2):
            drop_network_by_hand(v)
        inst.cli("network.rm", "n1", check=True)


def test_foreign_look_alikes_of_user_networks_are_left_alone(inst):
    """A record alone (no container, nothing on the host) is no orphan; a 'dn' bridge of another
    instance's prefix (with that instance's ifalias), one of our prefix without our ifalias, a
    table named as ours without our owner rule or with another's, a 'dw' veth of another
    instance's network: none is ours, none is touched."""
    from steps import nat
    from steps import network as net
    from steps.names import bridge_prefix, veth_prefix

    inst.cli("network.create", "n1", check=True)
    other = network_variant(inst, "n1", DIY_DOCKER_STATE_ROOT=inst.state_root + "-other")
    ours = network_variant(inst, "n1")
    bridges = {other.bridge: net.marker(other), ours.bridge: "", bridge_prefix(ours) + "0fade0bb": "diy-docker x"}
    tables = [f"{inst.nft_table}_n0fade0cc", f"{inst.nft_table}_n0fade0dd"]
    veth = veth_prefix(other) + "0fade01"
    try:
        for br, alias in bridges.items():
            subprocess.run(["ip", "link", "add", br, "type", "bridge"], check=True)
            if alias:
                subprocess.run(["ip", "link", "set", br, "alias", alias], check=True)
        nft(f"add table ip {tables[0]}")
        owned_table(tables[1], nat.table_marker(other))
        subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", veth[:-1] + "2"], check=True)
        assert doctor(inst) == (0, {"found": [], "fixed": [], "left": None})
        assert doctor(inst, "--fix")[0] == 0
        assert all(link_exists(br) for br in bridges) and link_exists(veth)
        assert table_exists("ip", tables[0]) and table_exists("ip", tables[1]) and table_exists("bridge", tables[1])
    finally:
        for table in tables:
            for fam in ("ip", "bridge"):
                subprocess.run(["nft", "delete", "table", fam, table], capture_output=True)
        for link in [*bridges, veth]:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        inst.cli("network.rm", "n1", check=True)
