"""Restart policies (--restart), the monitor's back-off, and a user's stop ending it."""
from __future__ import annotations

import json
import os
import time

import pytest

from steps import BadInput
from steps.runtime import restart
from steps.state import read_json
from tests.conftest import wait_for


def record(inst, name: str) -> dict:
    return read_json(os.path.join(inst.state_root, "containers", name, "info.json")) or {}


def last(inst, name: str) -> dict:
    return record(inst, name).get("last") or {}


def monitor_gone(inst, name: str) -> bool:
    """The container is down: no runtime state (its monitor cleaned up and left)."""
    return not os.path.exists(os.path.join(inst.run_root, "containers", name, "state.json"))


def ended(inst, name: str) -> bool:
    """Down for good: no monitor, the last exit recorded, not in a back-off."""
    info = last(inst, name)
    return monitor_gone(inst, name) and bool(info.get("finished_at")) and info.get("restarting") is False


def lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


# --- the policy alone -------------------------------------------------------------

def test_parse_policies():
    assert restart.parse(None) is None and restart.parse("no") is None
    assert restart.parse("always") == {"name": "always", "max_retries": 0}
    assert restart.parse("unless-stopped") == {"name": "unless-stopped", "max_retries": 0}
    assert restart.parse("on-failure") == {"name": "on-failure", "max_retries": 0}
    assert restart.parse("on-failure:5") == {"name": "on-failure", "max_retries": 5}
    assert restart.parse("no", rm=True) is None  # --rm with no policy is fine, as Docker
    for bad in ("sometimes", "always:3", "on-failure:-1", "on-failure:x", "on-failure:", "ALWAYS", "no:2"):
        with pytest.raises(BadInput, match=r"^bad restart "):
            restart.parse(bad)
    with pytest.raises(BadInput, match="Conflicting options: --restart and --rm"):
        restart.parse("always", rm=True)


def test_should_restart():
    always, failure3 = {"name": "always"}, {"name": "on-failure", "max_retries": 3}
    assert restart.should_restart(always, 0, 100, False)
    assert not restart.should_restart(always, 1, 0, True)  # a user's stop ends it
    assert restart.should_restart({"name": "unless-stopped"}, 0, 7, False)
    assert restart.should_restart(failure3, 1, 2, False)
    assert not restart.should_restart(failure3, 1, 3, False)  # at most 3 restarts
    assert not restart.should_restart(failure3, 0, 0, False)  # success is not a failure
    assert restart.should_restart({"name": "on-failure", "max_retries": 0}, 137, 1000, False)
    assert not restart.should_restart(None, 1, 0, False)


def test_backoff_doubles_caps_and_resets():
    b = restart.Backoff()
    seq = [b.next(0.5) for _ in range(12)]
    assert seq[:6] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    assert seq[-1] == 60.0 and max(seq) == 60.0
    assert b.next(10.0) == 0.1  # a run of 10 s resets it
    assert b.next(9.9) == 0.2


def test_at_boot_follows_dockers_documentation():
    def rec(name, **last):
        return {"restart": {"name": name, "max_retries": 0} if name else None,
                "last": {"started_at": "2026-01-01T00:00:00Z", **last}}

    assert restart.at_boot(rec("always"))
    assert restart.at_boot(rec("always", stopped_by_user=True))
    assert restart.at_boot(rec("unless-stopped"))
    assert not restart.at_boot(rec("unless-stopped", stopped_by_user=True))
    assert not restart.at_boot(rec("on-failure", exit_code=1))
    assert not restart.at_boot(rec(None))
    assert not restart.at_boot({"restart": {"name": "always"}, "last": {}})  # never started


# --- end to end ------------------------------------------------------------------------

def test_on_failure_restarts_n_times_then_stays_exited(inst, tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    inst.cli("run", "--name", "flaky", "--detach", "--restart", "on-failure:2", "--volume", f"{data}:/d",
             "--", "sh", "-c", "echo run >> /d/count; exit 1", check=True)
    wait_for(lambda: ended(inst, "flaky"), what="the end")
    time.sleep(0.5)
    assert lines(str(data / "count")) == ["run"] * 3
    info = last(inst, "flaky")
    assert (info["restart_count"], info["exit_code"], info["restarting"]) == (2, 1, False)
    assert "Exited (1)" in inst.cli("ps", "--all", check=True).stdout
    inst.cli("start", "flaky", check=True)  # a user's start: the count starts again
    wait_for(lambda: lines(str(data / "count")) == ["run"] * 6 and monitor_gone(inst, "flaky"), what="3 more")
    assert last(inst, "flaky")["restart_count"] == 2
    inst.cli("rm", "flaky", check=True)


def test_always_restarts_until_a_user_stops_it_even_in_a_backoff(inst, tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    inst.cli("run", "--name", "loop", "--detach", "--restart", "always", "--volume", f"{data}:/d",
             "--", "sh", "-c", "echo run >> /d/count; exit 0", check=True)
    # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s: the next back-off is 3.2 s
    wait_for(lambda: (last(inst, "loop").get("restart_count") or 0) >= 5 and last(inst, "loop").get("restarting"),
             what="five restarts")
    assert "Restarting (0)" in inst.cli("ps", "--all", check=True).stdout
    began = time.monotonic()
    inst.cli("stop", "loop", check=True)
    assert time.monotonic() - began < 3.0  # not the rest of the back-off
    assert monitor_gone(inst, "loop")
    runs = len(lines(str(data / "count")))
    time.sleep(1.0)
    assert len(lines(str(data / "count"))) == runs  # stopped for good
    info = last(inst, "loop")
    assert info["stopped_by_user"] and not info["restarting"] and info["exit_code"] == 0
    assert "Exited (0)" in inst.cli("ps", "--all", check=True).stdout
    inst.cli("rm", "loop", check=True)


def test_stop_of_a_running_restartable_container(inst):
    inst.cli("run", "--name", "srv", "--detach", "--restart", "always", "--", "sleep", "1000", check=True)
    inst.cli("stop", "srv", "--time", "1", check=True)
    time.sleep(0.5)
    assert monitor_gone(inst, "srv") and last(inst, "srv")["stopped_by_user"]
    inst.cli("start", "srv", check=True)  # a user's start clears the stop
    assert not last(inst, "srv")["stopped_by_user"]
    inst.cli("rm", "--force", "srv", check=True)
    assert inst.containers() == []


def test_foreground_run_returns_at_the_first_exit_and_restarting_goes_on(inst, tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    p = inst.cli("run", "--name", "fg", "--restart", "always", "--volume", f"{data}:/d",
                 "--", "sh", "-c", "echo run >> /d/count; echo out; exit 3")
    assert (p.returncode, p.stdout) == (3, "out\n"), p.stderr
    wait_for(lambda: len(lines(str(data / "count"))) >= 3, what="restarts by the detached monitor")
    assert not monitor_gone(inst, "fg")
    inst.cli("rm", "--force", "fg", check=True)  # rm -f ends it as stop does
    assert inst.containers() == []


def test_restarts_keep_the_address_and_the_changes(inst, tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    inst.cli("run", "--name", "keep", "--detach", "--restart", "on-failure", "--volume", f"{data}:/d",
             "--", "sh", "-c", "ip -4 -o addr show eth0 >> /ips; cp /ips /d/ips; "
             "[ $(wc -l < /ips) -ge 3 ] && exec sleep 1000; exit 1", check=True)
    wait_for(lambda: len(lines_of(data / "ips")) == 3, what="three runs")
    ips = lines_of(data / "ips")
    assert len(set(ips)) == 1 and "inet" in ips[0], ips  # one address; /ips survived in the rootfs
    wait_for(lambda: "Up " in inst.cli("ps", check=True).stdout, what="the third run")
    inst.cli("teardown", "keep", check=True)


def lines_of(path) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def test_unless_stopped_is_not_restarted_after_a_stop_nor_by_boot(inst):
    inst.cli("run", "--name", "us", "--detach", "--restart", "unless-stopped", "--", "sh", "-c", "exit 0",
             check=True)
    wait_for(lambda: (last(inst, "us").get("restart_count") or 0) >= 2, what="restarts")
    inst.cli("stop", "us", check=True)
    p = inst.cli("boot", check=True)
    assert "us: left stopped" in p.stdout, p.stdout
    time.sleep(0.3)
    assert monitor_gone(inst, "us")
    inst.cli("rm", "us", check=True)


@pytest.mark.parametrize("value,message", [
    ("sometimes", "bad restart 'sometimes': use no, on-failure[:N], always or unless-stopped"),
    ("always:2", "bad restart 'always:2': only on-failure takes a retry count"),
    ("on-failure:two", "bad restart 'on-failure:two': the retry count is a whole number"),
])
def test_bad_restart_is_refused_before_anything_is_made(inst, value, message):
    p = inst.cli("run", "--name", "bad", "--restart", value, "--", "true")
    assert p.returncode == 125 and message in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert inst.containers() == []


def test_restart_with_rm_is_refused(inst):
    p = inst.cli("run", "--name", "bad", "--rm", "--restart", "always", "--", "true")
    assert p.returncode == 125 and "Conflicting options: --restart and --rm" in p.stderr, p.stderr
    assert inst.containers() == []


# --- after a reboot -----------------------------------------------------------------

def power_cut(inst, name: str) -> None:
    """What a reboot does to a running container (as tests/test_reboot_concurrency.py): every
    process dies at once, no clean-up runs, mounts and cgroups are gone, the boot id changes."""
    import signal
    import subprocess

    from steps import config
    from steps.cgroup import cgroup_dirs
    from steps.names import Names
    from steps.state import write_json

    state_file = os.path.join(inst.run_root, "containers", name, "state.json")
    rt = read_json(state_file)
    for pid in (rt["monitor_pid"], rt["init_pid"]):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    subprocess.run(["umount", "-R", os.path.join(inst.state_root, "containers", name, "merged")], check=True)
    for _, d in cgroup_dirs(Names(config.load(), name).cgroup_path):
        wait_for(lambda d=d: not os.path.isdir(d) or try_rmdir(d), timeout=5, what=f"rmdir {d}")
    write_json(state_file, {**read_json(state_file), "boot_id": "00000000-0000-0000-0000-000000000000"})


def try_rmdir(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except OSError:
        return False


def test_boot_brings_back_what_the_policy_says_with_its_changes(inst, tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    gone = tmp_path / "gone"
    gone.mkdir()
    inst.cli("run", "--name", "web", "--detach", "--restart", "always", "--volume", f"{data}:/d", "--", "sh", "-c",
             "if [ -f /keep ]; then echo again >> /d/web; else echo written > /keep; echo first >> /d/web; fi; "
             "exec sleep 1000", check=True)
    inst.cli("run", "--name", "plain", "--detach", "--", "sleep", "1000", check=True)
    inst.cli("run", "--name", "broken", "--detach", "--restart", "always", "--volume", f"{gone}:/g", "--",
             "sleep", "1000", check=True)
    inst.cli("run", "--name", "parked", "--detach", "--restart", "unless-stopped", "--", "sleep", "1000", check=True)
    inst.cli("stop", "parked", "--time", "0", check=True)
    wait_for(lambda: lines(str(data / "web")) == ["first"], what="the first run")
    for name in ("web", "plain", "broken"):
        power_cut(inst, name)
    os.rmdir(gone)  # a volume source that did not survive the reboot: that start fails, the others go on
    p = inst.cli("boot")
    assert p.returncode == 125, (p.stdout, p.stderr)
    out = p.stdout.splitlines()
    assert "web: started (restart always)" in out and "plain: left stopped (restart no)" in out, out
    assert "parked: left stopped (restart unless-stopped, stopped by the user)" in out, out
    assert any(line.startswith("broken: cannot start: ") for line in out), out
    wait_for(lambda: lines(str(data / "web")) == ["first", "again"], what="the file written before")
    assert "web: already running" in inst.cli("boot", check=False).stdout.splitlines()
    assert monitor_gone(inst, "parked")
    assert not os.path.exists(os.path.join(inst.run_root, "containers", "plain", "state.json")) or \
        "plain" not in inst.cli("ps", check=True).stdout
    inst.cli("stop", "web", check=True)
    for name in ("web", "plain", "broken", "parked"):
        inst.cli("teardown", name, check=True)
    assert inst.containers() == []


def test_a_restart_that_cannot_launch_counts_as_a_failed_run(inst, tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    inst.cli("run", "--name", "vanish", "--detach", "--restart", "on-failure:2", "--volume", f"{data}:/d",
             "--", "/bin/sh", "-c", "echo run >> /d/count; rm /bin/sh; exit 1", check=True)  # gone next time
    wait_for(lambda: ended(inst, "vanish"), what="the end")
    assert lines(str(data / "count")) == ["run"]
    info = last(inst, "vanish")
    assert (info["restart_count"], info["exit_code"], info["restarting"]) == (2, 127, False)
    inst.cli("rm", "vanish", check=True)


def test_boot_unit_carries_the_instance(monkeypatch):
    from steps import DiyError
    from steps.cli.boot import unit

    monkeypatch.setenv("DIY_DOCKER_STATE_ROOT", "/srv/diy-state")
    text = unit()
    assert "Type=oneshot" in text and "After=network-online.target" in text and "KillMode=process" in text
    assert "Environment=DIY_DOCKER_STATE_ROOT=/srv/diy-state\n" in text
    assert [line for line in text.splitlines() if line.startswith("ExecStart=")][0].endswith(" boot")
    monkeypatch.setenv("DIY_DOCKER_RUN_ROOT", "/run/with space")
    with pytest.raises(DiyError, match="cannot write the unit"):
        unit()


def test_oom_is_recorded_per_run(inst, tmp_path):
    from tests.test_limits_volumes import needs

    needs("memory")
    data = tmp_path / "d"
    data.mkdir()
    inst.cli("run", "--name", "oomy", "--detach", "--restart", "on-failure:1", "--memory", "32M",
             "--volume", f"{data}:/d", "--", "sh", "-c",
             "if [ -f /d/once ]; then exit 2; fi; touch /d/once; tail /dev/zero", check=True)
    wait_for(lambda: ended(inst, "oomy"), timeout=120, what="the end")
    info = last(inst, "oomy")  # the first run was OOM-killed (137), the second one was not
    assert (info["restart_count"], info["exit_code"], info["oom_killed"]) == (1, 2, False)
    with open(os.path.join(inst.state_root, "containers", "oomy", "journal.jsonl")) as f:
        restarts = [e["detail"] for e in map(json.loads, f) if e.get("pipeline") == "restart"]
    assert restarts == ["exit code 137, OOM-killed"]
    inst.cli("rm", "oomy", check=True)
