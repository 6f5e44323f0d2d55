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
