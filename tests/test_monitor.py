"""The detached monitor's shim (steps/runtime/shim.py): its memory, its log, its signals, and
what a SIGKILL of it leaves (said, never silently lost; removable to the last file)."""
from __future__ import annotations

import json
import os
import signal
import time

from steps.runtime import shim
from steps.runtime.logfile import log_files
from steps.state import read_json
from tests.conftest import wait_for

MiB = 1024 * 1024


def runtime(inst, name: str) -> dict:
    return read_json(os.path.join(inst.run_root, "containers", name, "state.json")) or {}


def last(inst, name: str) -> dict:
    return (read_json(os.path.join(inst.state_root, "containers", name, "info.json")) or {}).get("last") or {}


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except FileNotFoundError:
        return []


def is_shim(pid: int) -> bool:
    words = cmdline(pid)
    return len(words) > 3 and words[1:3] == ["-I", "-S"] and os.path.basename(words[3]).startswith("shim.")


def shim_pid(inst, name: str) -> int:
    """The container's monitor, once it has become the shim."""
    pid = runtime(inst, name)["monitor_pid"]
    wait_for(lambda: is_shim(pid), what="the monitor to exec the shim")
    return pid


def memory(pid: int) -> dict:
    """VmRSS, RssAnon (/proc/PID/status) and Pss (smaps_rollup), in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                out[key] = int(value.split()[0]) * 1024
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1]) * 1024
    return out


def state(inst, name: str) -> str:
    return json.loads(inst.cli("inspect", name, check=True).stdout)[0]["DiyDocker"]["state"]["state"]


# --- pure logic -------------------------------------------------------------------

def test_the_fallback_encoder_is_json():
    for text in ["plain", 'q"b\\s\n\r\t\b\f\x01\x1f\x7f', "é€😀", ""]:
        assert shim.escape_py(text) == json.dumps(text) == shim.escape(text)


# --- a running container's monitor --------------------------------------------------

def test_the_shim_is_small_and_keeps_the_monitor_pid(inst):
    inst.cli("run", "--name", "small", "--detach", "--", "sleep", "1000", check=True)
    rt = runtime(inst, "small")
    pid = shim_pid(inst, "small")
    mem = memory(pid)
    # Measured here: RSS 8.3 MiB (5 of them libpython's text, shared), RssAnon 2.7 MiB; the whole
    # tool was about 30 MiB RSS, 25 MiB anonymous.
    assert mem["RssAnon"] < 4 * MiB and mem["VmRSS"] < 12 * MiB and mem["Pss"] < 9 * MiB, mem
    assert "running" == state(inst, "small") and runtime(inst, "small") == rt  # same pid, same start
    inst.cli("rm", "--force", "small", check=True)
    assert inst.containers() == []


def test_logs_written_by_the_shim_read_back(inst):
    script = "sleep 0.5; echo out-1; echo err-1 >&2; printf partial; sleep 0.3; echo; exit 4"
    inst.cli("run", "--name", "shimlog", "--detach", "--", "sh", "-c", script, check=True)
    shim_pid(inst, "shimlog")
    assert inst.cli("wait", "shimlog", check=True).stdout == "4\n"
    p = inst.cli("logs", "shimlog", check=True)
    assert p.stdout == "out-1\npartial\n" and p.stderr == "err-1\n"
    assert inst.cli("logs", "--timestamps", "shimlog", check=True).stdout.count("Z out-1\n") == 1
    inst.cli("rm", "shimlog", check=True)


def test_the_shim_rotates_the_log(inst):
    script = "sleep 0.5; i=0; while [ $i -lt 200 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done"
    inst.cli("run", "--name", "shimrot", "--detach", "--log-opt", "max-size=1k", "--log-opt", "max-file=2",
             "--", "sh", "-c", script, check=True)
    shim_pid(inst, "shimrot")
    assert inst.cli("wait", "shimrot", check=True).stdout == "0\n"
    path = os.path.join(inst.state_root, "containers", "shimrot", "container.log")
    assert log_files(path) == [path + ".1", path] and not os.path.exists(path + ".2")
    for f in log_files(path):
        assert os.path.getsize(f) <= 1024 + 120, (f, os.path.getsize(f))
    out = inst.cli("logs", "shimrot", check=True).stdout.splitlines()
    first = int(out[0].split("-")[1])
    assert out == [f"line-{i}-" + "x" * 24 for i in range(first, 200)]
    inst.cli("rm", "shimrot", check=True)


def test_the_shim_forwards_signals(inst):
    inst.cli("run", "--name", "trap", "--detach", "--", "sh", "-c",
             "trap 'exit 7' TERM; while true; do sleep 0.1; done", check=True)
    inst.cli("run", "--name", "notrap", "--detach", "--", "sleep", "1000", check=True)
    for name in ("trap", "notrap"):
        pid = shim_pid(inst, name)
        wait_for(lambda n=name: "running" == state(inst, n), what="running")
        if name == "trap":  # the handler is installed by the shell once it runs
            time.sleep(0.5)
        os.kill(pid, signal.SIGTERM)
    assert inst.cli("wait", "trap", check=True).stdout == "7\n"
    assert inst.cli("wait", "notrap", check=True).stdout == "137\n"  # PID 1 without a handler: SIGKILL
    inst.cli("rm", "trap", check=True)
    inst.cli("rm", "notrap", check=True)


def test_restarts_through_the_shim(inst):
    inst.cli("run", "--name", "again", "--detach", "--restart", "on-failure:2", "--",
             "sh", "-c", "sleep 0.3; echo run; exit 1", check=True)
    wait_for(lambda: not os.path.exists(os.path.join(inst.run_root, "containers", "again", "state.json"))
             and last(inst, "again").get("restarting") is False, what="the end of the restarts")
    info = last(inst, "again")
    assert info["restart_count"] == 2 and info["exit_code"] == 1
    assert inst.cli("logs", "again", check=True).stdout == "run\n" * 3
    inst.cli("rm", "again", check=True)


# --- a SIGKILL of the shim ------------------------------------------------------------

def test_sigkill_of_the_shim_while_the_container_runs(inst):
    inst.cli("run", "--name", "lost", "--detach", "--interactive", "--", "sleep", "1000", check=True)
    os.kill(shim_pid(inst, "lost"), signal.SIGKILL)
    assert "monitor lost" in inst.cli("ps", check=True).stdout
    assert state(inst, "lost") == "running (monitor lost)"
    inst.cli("rm", "--force", "lost", check=True)
    assert inst.containers() == []


def test_sigkill_of_the_shim_right_after_the_init_exited(inst):
    """The init has exited and not been reaped (the shim is stopped): the exit code goes with
    the shim, and the container says it was lost instead of inventing one."""
    inst.cli("run", "--name", "gone", "--detach", "--", "sh", "-c", "sleep 0.5; exit 3", check=True)
    pid = shim_pid(inst, "gone")
    os.kill(pid, signal.SIGSTOP)
    init = runtime(inst, "gone")["init_pid"]

    def zombie() -> bool:
        with open(f"/proc/{init}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"

    wait_for(zombie, what="the init to exit")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the shim to go")
    assert state(inst, "gone") == "stopped (killed)"
    assert "Exited (255)" in inst.cli("ps", "--all", check=True).stdout  # docker's unknown code
    assert last(inst, "gone")["exit_code"] is None
    inst.cli("teardown", "gone", check=True)
    assert inst.containers() == []


def test_a_stale_or_corrupt_shim_cache_is_compiled_again_never_run(inst):
    import glob
    from importlib.util import MAGIC_NUMBER

    inst.cli("run", "--name", "c1", "--detach", "--network", "none", "--", "/bin/sleep", "1000", check=True)
    inst.cli("rm", "c1", "--force", check=True)
    cached = glob.glob(os.path.join(inst.run_root, "shim.*.pyc"))
    assert len(cached) == 1
    good = open(cached[0], "rb").read()
    for bad in (good[:16] + b"\x00garbage" * 50,  # the right header, a body that does not load
                MAGIC_NUMBER + b"\0" * 12 + good[16:]):  # another source's header (stale)
        with open(cached[0], "wb") as f:
            f.write(bad)
        inst.cli("run", "--name", "c2", "--detach", "--network", "none", "--", "/bin/sh", "-c",
                 "echo up; sleep 1000", check=True)
        wait_for(lambda: is_shim(shim_pid(inst, "c2")), what="the shim")
        assert open(cached[0], "rb").read() == good  # compiled again
        assert inst.cli("logs", "c2", check=True).stdout == "up\n"
        inst.cli("rm", "c2", "--force", check=True)
