"""Fault injection: SIGKILL, a failure, a full disk (ENOSPC) or no file descriptor left
(EMFILE) at every step boundary and inside every step of run, start, stop and rm. Then (a) a
re-run resumes to a working container and (b) teardown leaves the host exactly as before (the leak
check of every test)."""
from __future__ import annotations

import json
import os
import random
import shutil
import time

import pytest

RUN = ["image", "layers", "volumes", "cgroup", "veth", "nat", "launch"]
START = ["layers", "volumes", "cgroup", "veth", "nat", "launch"]
STOP = ["launch", "nat", "veth", "cgroup", "volumes", "layers"]
EVERYWHERE, BOUNDARIES = ("before", "mid", "after"), ("before", "after")


def points(stages, action, where=EVERYWHERE):
    return [f"{s}.{action}.{w}" for s in stages for w in where]


# A resource running out is injected as the OSError the kernel gives (ENOSPC: the disk is full;
# EMFILE: the process's open files are used up): it must end as one line naming what ran out.
RUNNING_OUT = {"enospc": "no space left on", "emfile": "too many open files"}


def cases(pipeline, stages, action, where=EVERYWHERE):
    return [pytest.param(pipeline, p, a, id=f"{pipeline}-{p}-{a}")
            for p in points(stages, action, where) for a in ("kill", "fail", *RUNNING_OUT)]


# Every step boundary of the four pipelines, and the middle of every step: the middles of
# applies are reached through run, of undos through stop, of teardown through rm (start and
# rm run the same step code as run and stop, so their boundaries are what differs). The
# firewall step changes something only where a host chain drops our traffic: its middles
# and ends are in test_firewall, where one does.
MATRIX = (cases("run", RUN, "apply") + cases("stop", STOP, "undo") + cases("start", START, "apply", BOUNDARIES)
          + cases("rm", STOP, "undo", BOUNDARIES) + cases("rm", ["teardown"], "apply")
          + cases("run", ["firewall"], "apply", ("before",)) + cases("stop", ["firewall"], "undo", ("before",)))


@pytest.fixture
def volume(tmp_path):
    src = tmp_path / "v"
    src.mkdir()
    (src / "f").write_text("hello\n")
    return src


def run_args(volume, *extra, point=""):
    """Faults outside the network stages run without a network: the same step code, less time."""
    network = [] if point.startswith(("veth.", "nat.", "firewall.")) else ["--network", "none"]
    return ["run", "--name", "f", *network, *extra, "--volume", f"{volume}:/data:ro", "--", "/bin/sh", "-c",
            "cat /data/f; sleep ${NAP:-0}"]


def faulted(proc, action=None):
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    if action in RUNNING_OUT:
        last = proc.stderr.strip().splitlines()[-1]  # the report's lines come before it
        assert last.startswith("diy-docker: " + RUNNING_OUT[action]) and "Errno" not in proc.stderr, proc.stderr
        stage = last.split(" while ")[-1]
        assert stage.startswith(("applying ", "undoing ")), proc.stderr  # where: the step that ran out


def state(inst):
    rows = json.loads(inst.cli("ps", "--all", "--json", check=True).stdout)
    return rows[0]["state"] if rows else None


def setup_for(inst, pipeline, volume, point):
    if point.startswith("image."):  # the image step only acts when the image is missing
        shutil.rmtree(os.path.join(inst.state_root, "images"), ignore_errors=True)
    if pipeline == "start":
        inst.cli(*run_args(volume, point=point), check=True)
    elif pipeline in ("stop", "rm"):
        inst.cli(*run_args(volume, "--detach", "--env", "NAP=1000", point=point), check=True)


def act(inst, pipeline, fault=None):
    args = {"run": None, "start": ["start", "f", "--attach"], "stop": ["stop", "f", "--time", "1"],
            "rm": ["rm", "f", "--force"]}[pipeline]
    return inst.cli(*args, fault=fault) if args else None


@pytest.mark.parametrize("pipeline,point,action", MATRIX)
def test_fault_then_resume_then_teardown(inst, volume, pipeline, point, action):
    fault = f"{point}:{action}"
    if action == "kill":
        # (b) killed, then teardown: nothing may be left (the fixture checks the whole host)
        setup_for(inst, pipeline, volume, point)
        faulted(inst.cli(*run_args(volume, point=point), fault=fault) if pipeline == "run"
                else act(inst, pipeline, fault))
        inst.cli("teardown", "f", check=True)
        assert inst.containers() == []
    # (a) the fault, then the same command again resumes to a working container
    setup_for(inst, pipeline, volume, point)
    faulted(inst.cli(*run_args(volume, point=point), fault=fault) if pipeline == "run"
            else act(inst, pipeline, fault), action)
    if pipeline == "run" and action != "kill":
        assert inst.containers() == []  # the rollback took everything this run had made
    if pipeline in ("run", "start"):
        again = inst.cli(*run_args(volume, point=point)) if pipeline == "run" else act(inst, pipeline)
        assert again.returncode == 0, again.stderr
        assert again.stdout == "hello\n"
        assert state(inst) == "exited (0)"
    elif pipeline == "stop":
        act(inst, pipeline).check_returncode()
        assert state(inst).startswith("exited")
    elif inst.containers():
        act(inst, pipeline).check_returncode()
    assert inst.containers() in ([], ["f"])
    inst.cli("teardown", "f", check=True)


def test_random_sigkills_of_run(inst, volume):
    rng = random.Random(1234)
    for _ in range(12):
        proc = inst.popen(*run_args(volume))
        time.sleep(rng.uniform(0.0, 0.6))
        proc.kill()
        proc.communicate()
        if rng.random() < 0.5:
            again = inst.cli(*run_args(volume))
            assert again.returncode in (0, 125), again.stderr  # 125: it had finished already
            if again.returncode == 125:
                assert "already exists" in again.stderr
        inst.cli("teardown", "f", check=True)
    assert inst.containers() == []
