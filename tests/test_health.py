"""Health checks (steps/runtime/health.py): the flags and the image's HEALTHCHECK, probes run inside
the container by the monitor (the detached shim and the foreground one), the status in ps and
inspect on both faces, and wait_healthy. Intervals of 1 s: each test takes a few seconds."""
from __future__ import annotations

import json
import os
import time

import pytest

from steps import BadInput
from steps.runtime import health
from steps.spec import RunOptions, build, differences
from tests import registry as reg
from tests.test_run_flags import assert_refused, busybox_image

FAST = ("--health-interval", "1s")


def run_detached(inst, name: str, *flags: str, command=("sleep", "60")) -> None:
    inst.cli("run", "--name", name, "--detach", "--network", "none", *flags, "--", *command, check=True)


def inspect(inst, name: str) -> dict:
    return json.loads(inst.cli("inspect", name, check=True).stdout)[0]


def ps_status(inst, name: str, face=None) -> str:
    out = (face or inst.docker)("ps", "--format", "{{.Names}}\t{{.Status}}", check=True).stdout
    return dict(line.split("\t") for line in out.splitlines())[name]


def health_file(inst, name: str) -> str:
    return os.path.join(inst.run_root, "containers", name, "health.json")


# --- pure logic -------------------------------------------------------------------------------------

def test_durations_and_flags():
    d = health.parse_duration
    assert (d("30s", "x"), d("1m30s", "x"), d("500ms", "x"), d("1.5h", "x"), d("0", "x"), d("1m0.5s", "x")) == \
        (30.0, 90.0, 0.5, 5400.0, 0.0, 60.5)
    for bad in ("1x", "-1s", "", "1.5", "s", "1s2", ".s", "1 s", "2us"):  # 2us: below Docker's 1ms
        with pytest.raises(BadInput):
            d(bad, "--health-interval")
    spec = build("c", RunOptions(health_cmd="test -e /tmp/ok", health_interval="1s", health_retries="2"))
    assert spec["healthcheck"] == {"test": ["CMD-SHELL", "test -e /tmp/ok"], "interval": 1.0, "retries": 2}
    assert build("c", RunOptions())["healthcheck"] is None
    assert build("c", RunOptions(no_healthcheck=True))["healthcheck"] == {"test": ["NONE"]}
    # The Compose field, with the flags over it per field; zeros mean Docker's defaults.
    given = {"test": ["CMD", "/bin/true"], "interval": 2, "timeout": 0, "start_period": 5.5, "retries": 4}
    spec = build("c", RunOptions(healthcheck=given, health_interval="1s"))
    assert spec["healthcheck"] == {"test": ["CMD", "/bin/true"], "interval": 1.0, "start_period": 5.5, "retries": 4}
    for bad in ({"test": ["CMD"]}, {"test": ["CMD-SHELL"]}, {"test": "true"}, {"tset": ["NONE"]},
                {"retries": -1}, {"interval": -2}):
        with pytest.raises(BadInput):
            build("c", RunOptions(healthcheck=bad))
    a = build("c", RunOptions(health_cmd="true"))
    b = build("c", RunOptions(health_cmd="false"))
    assert differences(a, b) == ["healthcheck"]  # a changed check is a different container


def test_merge_with_the_image_and_judging():
    image = {"Test": ["CMD", "/bin/check"], "Interval": 5 * 10**9, "Timeout": 2 * 10**9, "Retries": 7}
    assert health.effective(None, image) == {"test": ["CMD", "/bin/check"], "interval": 5.0, "timeout": 2.0,
                                             "start_period": 0.0, "retries": 7}
    assert health.effective({"retries": 1}, image)["retries"] == 1
    assert health.effective({"test": ["CMD-SHELL", "x"]}, image)["test"] == ["CMD-SHELL", "x"]
    assert health.effective({"test": ["NONE"]}, image) is None  # --no-healthcheck
    assert health.effective(None, {"Test": ["NONE"]}) is None
    assert health.effective({"test": ["CMD-SHELL", "x"]}, None) == {
        "test": ["CMD-SHELL", "x"], "interval": 30.0, "timeout": 30.0, "start_period": 0.0, "retries": 3}
    check = {"test": ["CMD-SHELL", "x"], "interval": 1, "timeout": 1, "start_period": 10, "retries": 2}
    h = {"check": check, "started": 100.0, "Status": "starting", "FailingStreak": 0, "Log": []}
    assert health.judge(h, 1, 105.0)["FailingStreak"] == 0  # within the start period: not counted
    h = health.judge(h, 1, 111.0)
    assert (h["Status"], h["FailingStreak"]) == ("starting", 1)
    h = health.judge(h, 1, 112.0)
    assert (h["Status"], h["FailingStreak"]) == ("unhealthy", 2)
    h = health.judge(h, 0, 113.0)
    assert (h["Status"], h["FailingStreak"]) == ("healthy", 0)
    h = health.judge(h, 1, 114.0)  # after a success the start period no longer spares anything
    assert (h["Status"], h["FailingStreak"]) == ("healthy", 1)
    assert health.go_duration(0.5) == "500ms" and health.go_duration(90) == "1m30s"


def test_the_prober_spawns_reaps_and_kills_an_overrun(tmp_path, monkeypatch):
    """The shim's timing alone (builtin modules only): one probe at a time, the next one an interval
    after the last ended, one that overruns its timeout (+ GRACE) killed and reaped."""
    import select

    from steps.runtime import shim

    monkeypatch.setattr(shim.Prober, "GRACE", 0.2)
    ran = tmp_path / "ran"
    prober = shim.Prober(["/bin/sh", "-c", f"echo x >> {ran}; sleep 30"], 0.05, 0.1, str(tmp_path / "log"))
    pids = set()
    deadline = time.monotonic() + 3
    while len(pids) < 3:
        assert time.monotonic() < deadline, pids
        prober.tick(select.select(prober.fds(), [], [], prober.wait())[0])
        if prober.pid:
            pids.add(prober.pid)
    prober.stop()
    assert prober.pid is None and prober.fds() == []
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids)  # killed and reaped, no zombie
    assert ran.read_text().count("x") >= 2


# --- real containers --------------------------------------------------------------------------------

def test_starting_then_healthy_in_ps_and_inspect(inst):
    run_detached(inst, "web", "--health-cmd", "test -e /tmp/ok", *FAST,
                 command=("sh", "-c", "sleep 1.5; touch /tmp/ok; sleep 60"))
    try:
        assert inspect(inst, "web")["State"]["Health"] == {"Status": "starting", "FailingStreak": 0, "Log": []}
        assert ps_status(inst, "web", inst.cli).endswith("(health: starting)")
        assert health.wait_healthy("web", 15) == "healthy"
        state = inspect(inst, "web")["State"]["Health"]
        assert state["Status"] == "healthy" and state["FailingStreak"] == 0
        assert state["Log"][-1]["ExitCode"] == 0 and set(state["Log"][-1]) == {"Start", "End", "ExitCode", "Output"}
        assert ps_status(inst, "web").endswith("(healthy)") and ps_status(inst, "web").startswith("Up ")
        rows = json.loads(inst.cli("ps", "--json", check=True).stdout)
        assert [r["health"] for r in rows] == ["healthy"]
        got = inst.docker("inspect", "--format", "{{.State.Health.Status}}", "web", check=True).stdout
        assert got == "healthy\n"
        config = inspect(inst, "web")["Config"]["Healthcheck"]
        assert config == {"Test": ["CMD-SHELL", "test -e /tmp/ok"], "Interval": 10**9, "Timeout": 30 * 10**9,
                          "StartPeriod": 0, "Retries": 3}
        inst.cli("stop", "web", check=True)
        assert "Health" not in inspect(inst, "web")["State"]  # only while it runs
        assert not os.path.exists(health_file(inst, "web"))
        assert health.wait_healthy("web", 1) == "exited"
    finally:
        inst.cli("rm", "--force", "web", check=True)


def test_unhealthy_after_retries_on_dockers_face(inst):
    inst.docker("run", "-d", "--name", "bad", "--network", "none", "--health-cmd", "echo nope; exit 1",
                "--health-interval", "1s", "--health-retries", "2", "busybox", "sleep", "60", check=True)
    try:
        began = time.monotonic()
        assert health.wait_healthy("bad", 15) == "unhealthy"
        assert time.monotonic() - began < 6  # two failures, a second apart
        state = inspect(inst, "bad")["State"]["Health"]
        assert state["Status"] == "unhealthy" and state["FailingStreak"] >= 2
        assert all(e["ExitCode"] == 1 and e["Output"] == "nope\n" for e in state["Log"])
        assert ps_status(inst, "bad").endswith("(unhealthy)")
        assert inst.docker("inspect", "-f", "{{.State.Health.FailingStreak}}", "bad", check=True).stdout.strip() >= "2"
        time.sleep(5)  # the log keeps the last five results
        log = inspect(inst, "bad")["State"]["Health"]["Log"]
        assert len(log) == 5 and log == sorted(log, key=lambda e: e["Start"])
        logs = inst.docker("logs", "bad", check=True)
        assert "nope" not in logs.stdout + logs.stderr  # probes are not the container's output
    finally:
        inst.docker("rm", "-f", "bad", check=True)


def test_a_probe_over_its_timeout_is_killed(inst):
    run_detached(inst, "slow", "--health-cmd", "sleep 10", *FAST, "--health-timeout", "500ms",
                 "--health-retries", "1")
    try:
        began = time.monotonic()
        assert health.wait_healthy("slow", 15) == "unhealthy"
        assert time.monotonic() - began < 5
        entry = inspect(inst, "slow")["State"]["Health"]["Log"][0]
        assert entry["ExitCode"] == -1 and entry["Output"] == "Health check exceeded timeout (500ms)"
    finally:
        inst.cli("rm", "--force", "slow", check=True)


def test_start_period_does_not_count_failures(inst):
    run_detached(inst, "sp", "--health-cmd", "exit 1", *FAST, "--health-start-period", "3s", "--health-retries", "1")
    try:
        deadline = time.monotonic() + 10
        while len((health.current(_names("sp")) or {}).get("Log") or []) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        state = inspect(inst, "sp")["State"]["Health"]
        assert (state["Status"], state["FailingStreak"]) == ("starting", 0) and state["Log"][0]["ExitCode"] == 1
        assert health.wait_healthy("sp", 10) == "unhealthy"  # once the start period is over
    finally:
        inst.cli("rm", "--force", "sp", check=True)


def test_the_images_healthcheck_exec_form_and_no_healthcheck(inst, tmp_path, monkeypatch):
    original = reg.image_config

    def with_healthcheck(spec, diff_ids):
        config = original(spec, diff_ids)
        config["config"]["Healthcheck"] = {"Test": ["CMD", "/bin/sh", "-c", "echo from-image"],
                                           "Interval": 10**9, "Timeout": 3 * 10**9, "Retries": 2}
        return config

    monkeypatch.setattr(reg, "image_config", with_healthcheck)
    busybox_image(inst, tmp_path, "checked:1")
    run_detached(inst, "img", "--image", "checked:1")
    inst.docker("run", "-d", "--name", "off", "--network", "none", "--no-healthcheck", "checked:1", "sleep", "60",
                check=True)
    try:
        assert health.wait_healthy("img", 15) == "healthy"
        state = inspect(inst, "img")
        assert state["State"]["Health"]["Log"][-1]["Output"] == "from-image\n"
        assert state["Config"]["Healthcheck"] == {"Test": ["CMD", "/bin/sh", "-c", "echo from-image"],
                                                  "Interval": 10**9, "Timeout": 3 * 10**9, "StartPeriod": 0,
                                                  "Retries": 2}
        assert health.wait_healthy("off", 1) == "none"
        assert "Health" not in inspect(inst, "off")["State"]
        assert inspect(inst, "off")["Config"]["Healthcheck"] == {"Test": ["NONE"]}
        assert ps_status(inst, "off").startswith("Up ") and "health" not in ps_status(inst, "off")
    finally:
        inst.cli("rm", "--force", "img", check=True)
        inst.cli("rm", "--force", "off", check=True)


def test_the_foreground_monitor_runs_them_too(inst):
    p = inst.popen("run", "--rm", "--name", "fg", "--network", "none", "--health-cmd", "true", *FAST,
                   "--", "sleep", "4")
    try:
        deadline = time.monotonic() + 10
        while "fg" not in inst.containers() or health.current(_names("fg")) is None:
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.05)
        assert health.wait_healthy("fg", 10) == "healthy"
        assert ps_status(inst, "fg").endswith("(healthy)")
    finally:
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert out == "" and inst.containers() == []  # no probe output on the caller's terminal; --rm


def test_a_restart_starts_again_at_starting(inst):
    run_detached(inst, "rs", "--health-cmd", "true", *FAST)
    try:
        assert health.wait_healthy("rs", 15) == "healthy"
        inst.cli("restart", "rs", "--time", "1", check=True)
        assert inspect(inst, "rs")["State"]["Health"]["Status"] == "starting"
        assert health.wait_healthy("rs", 15) == "healthy"
    finally:
        inst.cli("rm", "--force", "rs", check=True)


@pytest.mark.parametrize("flags,words", [
    (["--health-interval", "1x"], ["--health-interval", "duration"]),
    (["--health-timeout", "-1s"], ["--health-timeout", "negative"]),
    (["--health-start-period", "5"], ["--health-start-period"]),
    (["--health-retries", "-1"], ["--health-retries"]),
    (["--health-retries", "many"], ["--health-retries"]),
    (["--health-cmd", " "], ["--health-cmd"]),
    (["--no-healthcheck", "--health-cmd", "true"], ["--no-healthcheck", "conflicts"]),
])
def test_bad_flags_are_refused_in_one_line(inst, flags, words):
    assert_refused(inst, ["run", "--name", "x", "--network", "none", *flags, "--", "true"], words)


def test_bad_flag_on_dockers_face(inst):
    p = inst.docker("run", "--health-interval", "soon", "busybox", "true")
    assert p.returncode == 125 and p.stderr.count("\n") == 1 and "--health-interval" in p.stderr, p.stderr
    assert inst.containers() == []


def _names(name: str):
    from steps import config
    from steps.names import Names

    return Names(config.load(), name)
