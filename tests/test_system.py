"""system df: what images, containers and volumes take, and what a prune could give back."""
from __future__ import annotations

import json
import os


def summary(inst) -> dict:
    out = json.loads(inst.cli("system.df", "--json", check=True).stdout)
    return {row["type"]: row for row in out["summary"]}


def test_system_df_counts_sizes_and_what_is_reclaimable(inst):
    inst.cli("run", "--name", "up", "--detach", "--network", "none", "--volume", "used:/data", "--", "/bin/sh",
             "-c", "head -c 300000 /dev/zero > /big; echo hi > /data/f; sleep 1000", check=True)
    inst.cli("run", "--name", "done", "--network", "none", "--", "/bin/sh", "-c",
             "head -c 100000 /dev/zero > /x", check=True)
    inst.docker("volume", "create", "spare", check=True)
    with open(os.path.join(inst.state_root, "volumes", "spare", "_data", "f"), "w") as f:
        f.write("x" * 5000)
    try:
        rows = summary(inst)
        assert (rows["Images"]["total"], rows["Images"]["active"], rows["Images"]["reclaimable"]) == (1, 1, 0)
        assert rows["Images"]["size"] > 500_000  # busybox's layer
        ctrs = rows["Containers"]
        assert (ctrs["total"], ctrs["active"]) == (2, 1)
        assert ctrs["size"] >= 400_000 and 100_000 <= ctrs["reclaimable"] < 150_000  # the stopped one's layer
        vols = rows["Local Volumes"]
        assert (vols["total"], vols["active"], vols["size"], vols["reclaimable"]) == (2, 1, 5003, 5000)
        text = inst.docker("system", "df", "-v", check=True).stdout
        assert text.splitlines()[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
        assert "Local Volumes   2         1" in text and "Build Cache" in text
        for part in ("Images space usage:", "Containers space usage:", "Local Volumes space usage:", "spare", "done"):
            assert part in text
    finally:
        inst.cli("rm", "up", "--force", check=True)
        inst.cli("rm", "done", check=True)
        inst.docker("volume", "rm", "used", "spare", check=True)


def test_system_prune_asks_then_removes_what_docker_would(inst):
    inst.cli("run", "--name", "up", "--detach", "--network", "none", "--", "/bin/sleep", "1000", check=True)
    inst.cli("run", "--name", "done", "--network", "none", "--volume", "/anon", "--", "/bin/sh", "-c",
             "head -c 100000 /dev/zero > /x", check=True)
    inst.docker("volume", "create", "named", check=True)
    try:
        no = inst.docker("system", "prune", input="n\n", check=True)
        assert "WARNING! This will remove:" in no.stdout and "all stopped containers" in no.stdout
        assert sorted(inst.containers()) == ["done", "up"]  # asked, answered no: nothing removed
        yes = inst.docker("system", "prune", "--volumes", input="y\n", check=True)
        assert "Deleted Containers:" in yes.stdout and "Deleted Volumes:" in yes.stdout
        assert "Total reclaimed space:" in yes.stdout
        assert inst.containers() == ["up"]  # the running one stays
        vols = json.loads(inst.cli("volume.ls", "--json", check=True).stdout)
        assert [v["Name"] for v in vols] == ["named"]  # the anonymous one went; a named one stays
        inst.cli("system.prune", "--all", "--force", check=True)
        assert inst.containers() == ["up"]
        images = json.loads(inst.cli("images", "--json", check=True).stdout)
        assert [i["name"] for i in images] == ["busybox"]  # used by the running container: kept
    finally:
        inst.cli("rm", "up", "--force", check=True)
        inst.docker("volume", "rm", "named", check=True)
    inst.cli("system.prune", "--all", "--force", check=True)
    assert json.loads(inst.cli("images", "--json", check=True).stdout) == []
