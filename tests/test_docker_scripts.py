"""Scripts written for Docker run unchanged against `diy-docker` (issue "Docker's face")."""
from __future__ import annotations

import re
import subprocess
import sys
import time


def docker_popen(inst, *args) -> subprocess.Popen:
    code = "import sys; from steps.cli import main; sys.argv[0] = 'diy-docker'; main()"
    return subprocess.Popen([sys.executable, "-c", code, *args], env=inst.env, cwd="/", text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def test_detached_id_exec_exit_code_and_kill_wait(inst):
    cid = inst.docker("run", "-d", "busybox", "sleep", "30", check=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    assert inst.docker("exec", cid, "sh", "-c", "exit 3").returncode == 3
    assert inst.docker("exec", cid[:12], "cat", "/proc/1/cmdline").stdout == "sleep\x0030\x00"
    inst.docker("kill", "-s", "KILL", cid, check=True)
    assert inst.docker("wait", cid, check=True).stdout == "137\n"
    stopped = inst.docker("exec", cid, "true")
    assert stopped.returncode != 0 and stopped.stderr.count("\n") == 1
    inst.docker("rm", cid, check=True)


def test_logs_follow_a_ticking_container(inst):
    inst.docker("run", "-d", "--name", "tick", "--network", "none", "busybox", "sh", "-c",
                "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done", check=True)
    follower = docker_popen(inst, "logs", "-f", "tick")
    try:
        lines = [follower.stdout.readline() for _ in range(3)]
        assert lines == ["tick 0\n", "tick 1\n", "tick 2\n"]
        inst.docker("stop", "-t", "1", "tick", check=True)
        assert follower.wait(timeout=20) == 0  # -f ends with the container
    finally:
        follower.kill()
        follower.wait()
    inst.docker("rm", "tick", check=True)


def test_named_volume_outlives_its_container(inst):
    inst.docker("run", "--rm", "-v", "vol:/d", "--network", "none", "busybox", "sh", "-c", "echo kept > /d/f",
                check=True)
    p = inst.docker("run", "--rm", "-v", "vol:/d", "--network", "none", "busybox", "cat", "/d/f", check=True)
    assert p.stdout == "kept\n"
    inst.docker("volume", "rm", "vol", check=True)


def test_on_failure_restarts_exactly_twice(inst, tmp_path):
    (tmp_path / "count").write_text("")
    inst.docker("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "--network", "none",
                "-v", f"{tmp_path}:/d", "busybox", "sh", "-c", "echo run >> /d/count; exit 1", check=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = inst.docker("inspect", "--format", "{{.State.Status}} {{.RestartCount}}", "flaky").stdout
        if state.strip() == "exited 2":
            break
        time.sleep(0.2)
    time.sleep(1)  # no fourth run
    assert (tmp_path / "count").read_text() == "run\n" * 3
    assert inst.docker("wait", "flaky", check=True).stdout == "1\n"
    inst.docker("rm", "flaky", check=True)


def test_read_only_root_with_a_tmpfs_env_file_and_init(inst, tmp_path):
    p = inst.docker("run", "--rm", "--read-only", "--tmpfs", "/run", "--network", "none", "busybox", "sh", "-c",
                    "touch /x 2>&1; echo ok > /run/y && cat /run/y")
    assert "Read-only file system" in p.stdout and p.stdout.endswith("ok\n"), p
    env_file = tmp_path / "app.env"
    env_file.write_text("# settings\nGREETING=hello world\nEMPTY=\n")
    p = inst.docker("run", "--rm", "--env-file", str(env_file), "-e", "EXTRA=1", "--network", "none", "busybox",
                    "sh", "-c", 'echo "$GREETING|$EMPTY|$EXTRA"', check=True)
    assert p.stdout == "hello world||1\n"
    p = inst.docker("run", "--rm", "--init", "--network", "none", "busybox", "sh", "-c",
                    "cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $$", check=True)
    first, pid = p.stdout.splitlines()
    assert first.startswith("/sbin/docker-init -- sh -c") and pid != "1"
