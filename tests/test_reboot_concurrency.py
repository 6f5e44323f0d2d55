"""A simulated reboot, and many runs at once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from steps.state import read_json, write_json


def test_start_after_a_reboot_keeps_the_files(inst):
    inst.cli("run", "--name", "rb", "--detach", "--", "/bin/sh", "-c",
             "if [ -f /keep ]; then echo again; cat /keep; else echo written > /keep; echo first; fi; "
             "exec sleep 1000", check=True)
    info = json.loads(inst.cli("inspect", "rb", check=True).stdout)[0]["DiyDocker"]
    rt = info["runtime"]
    # the power goes: every process dies at once and no clean-up runs
    for pid in (rt["monitor_pid"], rt["init_pid"]):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    # ... and the mounts and cgroups do not survive a reboot either
    subprocess.run(["umount", "-R", info["paths"]["merged"]], check=True)
    from steps.cgroup import cgroup_dirs

    for _, d in cgroup_dirs(info["paths"]["cgroup"]):
        deadline = time.monotonic() + 5
        while os.path.isdir(d):
            try:
                os.rmdir(d)
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    state_file = os.path.join(inst.run_root, "containers", "rb", "state.json")
    state = read_json(state_file)
    state["boot_id"] = "00000000-0000-0000-0000-000000000000"  # another boot
    write_json(state_file, state)
    assert "stopped by a reboot" in inst.cli("ps", "--all", "--json", check=True).stdout
    inst.cli("start", "rb", check=True)
    rows = json.loads(inst.cli("ps", "--json", check=True).stdout)
    assert rows[0]["state"] == "running"
    inst.cli("stop", "rb", check=True)
    assert inst.cli("logs", "rb", check=True).stdout.split() == ["first", "again", "written"]
    inst.cli("rm", "rb", check=True)


def test_eight_runs_of_one_name(inst):
    procs = [inst.popen("run", "--name", "same", "--", "/bin/sh", "-c", "echo ran; sleep 1") for _ in range(8)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    winners = [r for r in results if r[0] == 0]
    assert len(winners) == 1, results
    assert winners[0][1] == "ran\n"
    for code, out, err in results:
        if code != 0:
            assert code == 125 and out == ""
            assert ("already running" in err or "already exists" in err or "cannot lock" in err), err
    assert inst.containers() == ["same"]
    inst.cli("rm", "same", check=True)


def test_eight_names_at_once(inst):
    inst.cli("run", "--rm", "--name", "warm", "--", "/bin/true", check=True)  # build the image once
    procs = {f"n{i}": inst.popen("run", "--rm", "--name", f"n{i}", "--memory", "32M", "--", "/bin/sh", "-c",
                                 "hostname; sleep 0.5") for i in range(8)}
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out == f"{name}\n"
    assert inst.containers() == []
