"""End to end: run containers through the CLI and ask the container itself."""
from __future__ import annotations

import json
import os

import pytest


def test_pid1_hostname_and_rootfs(inst):
    p = inst.cli("run", "--name", "box", "--rm", "--", "/bin/sh", "-c",
                 'echo "pid=$$"; hostname; ls /; test -e /etc/debian_version && echo HOST-ROOT; cat /proc/1/cmdline')
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "pid=1"
    assert lines[1] == "box"
    assert "linuxrc" in lines and "bin" in lines  # the busybox image, not the host
    assert "HOST-ROOT" not in p.stdout
    assert inst.containers() == []  # --rm


def test_argv_reaches_the_container_word_for_word(inst):
    p = inst.cli("run", "--name", "argv", "--rm", "--", "/bin/sh", "-c", 'printf "[%s]\\n" "$@"', "sh",
                 "a  b", "it's", "", "$HOME")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["[a  b]", "[it's]", "[]", "[$HOME]"]


@pytest.mark.parametrize("command,code", [
    (["/bin/sh", "-c", "exit 0"], 0),
    (["/bin/sh", "-c", "exit 3"], 3),
    (["/bin/sh", "-c", "kill -TERM $$; sleep 1"], 0),  # PID 1 ignores an uncaught SIGTERM
    (["/bin/sh", "-c", "sleep 5 & kill -9 $!; wait $!"], 137),
    (["/etc/passwd"], 126),
    (["/nonexistent"], 127),
    (["no-such-command"], 127),
])
def test_exit_codes_pass_through(inst, command, code):
    p = inst.cli("run", "--name", "codes", "--rm", "--", *command)
    assert p.returncode == code, (p.stdout, p.stderr)
    if code in (126, 127):
        assert len(p.stderr.strip().splitlines()[-1]) < 200
        assert "Traceback" not in p.stderr
    assert inst.containers() == []


def test_env_and_workdir(inst):
    p = inst.cli("run", "--name", "envwd", "--rm", "--env", "FOO=bar baz", "--env", "EMPTY=",
                 "--workdir", "/srv/app", "--", "/bin/sh", "-c", 'echo "$FOO|$EMPTY|$(pwd)|$PATH"')
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "bar baz||/srv/app|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_namespaces_are_new(inst):
    p = inst.cli("run", "--name", "ns", "--rm", "--network", "none", "--", "/bin/sh", "-c",
                 "readlink /proc/self/ns/mnt /proc/self/ns/uts /proc/self/ns/ipc /proc/self/ns/pid "
                 "/proc/self/ns/net; ls /sys/class/net; cat /proc/self/cgroup | head -1")
    assert p.returncode == 0, p.stderr
    inside = p.stdout.split()
    for ns in ("mnt", "uts", "ipc", "pid", "net"):
        host = os.readlink(f"/proc/self/ns/{ns}")
        assert host not in inside, f"{ns} namespace is the host's"
    assert "lo" in inside and "eth0" not in inside


def test_dev_proc_sys(inst):
    p = inst.cli("run", "--name", "dev", "--rm", "--", "/bin/sh", "-c",
                 "ls /dev; echo x > /dev/null && echo null-ok; head -c4 /dev/zero | wc -c; "
                 "touch /sys/x 2>/dev/null || echo sys-ro; grep -c . /proc/mounts >/dev/null && echo proc-ok")
    assert p.returncode == 0, p.stderr
    for node in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx"):
        assert node in p.stdout.split(), node
    assert "null-ok" in p.stdout and "sys-ro" in p.stdout and "proc-ok" in p.stdout


def test_file_descriptors_are_closed(inst):
    p = inst.cli("run", "--name", "fds", "--rm", "--", "/bin/ls", "/proc/self/fd")
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.split()) == ["0", "1", "2", "3"]  # 3 is ls's own directory handle


def test_stop_start_keeps_changes(inst):
    inst.cli("run", "--name", "keep", "--", "/bin/sh", "-c", "echo kept > /data.txt", check=True)
    ps = inst.cli("ps", "--all", "--json", check=True)
    [row] = json.loads(ps.stdout)
    assert row["state"] == "exited (0)" and row["name"] == "keep"
    p = inst.cli("start", "keep", "--attach", check=True)
    assert p.returncode == 0
    # the same command ran again on the same upper layer: the file is still there
    upper = os.path.join(inst.state_root, "containers", "keep", "upper", "data.txt")
    assert open(upper).read() == "kept\n"
    inst.cli("rm", "keep", check=True)


def test_detached_start_stop_logs(inst):
    inst.cli("run", "--name", "bg", "--detach", "--", "/bin/sh", "-c",
             "cat /note 2>/dev/null || echo first > /note; echo up; exec sleep 1000", check=True)
    rows = json.loads(inst.cli("ps", "--json", check=True).stdout)
    assert rows[0]["state"] == "running" and rows[0]["pid"]
    p = inst.cli("rm", "bg")
    assert p.returncode != 0 and "running" in p.stderr
    inst.cli("stop", "bg", check=True)
    rows = json.loads(inst.cli("ps", "--all", "--json", check=True).stdout)
    assert rows[0]["state"] == "exited (137)"  # sleep as PID 1 has no SIGTERM handler
    inst.cli("start", "bg", check=True)
    inst.cli("stop", "bg", "--time", "1", check=True)
    logs = inst.cli("logs", "bg", check=True).stdout
    assert logs.split() == ["up", "first", "up"]
    inst.cli("rm", "bg", check=True)


def test_rm_force_and_teardown_of_running(inst):
    inst.cli("run", "--name", "f1", "--detach", "--", "/bin/sleep", "1000", check=True)
    inst.cli("rm", "f1", "--force", check=True)
    inst.cli("run", "--name", "f2", "--detach", "--", "/bin/sleep", "1000", check=True)
    inst.cli("teardown", "f2", check=True)
    assert inst.containers() == []


def test_check_mode_changes_nothing(inst):
    p = inst.cli("run", "--name", "plan", "--check", "--memory", "64M", "--", "/bin/true")
    assert p.returncode == 0, p.stderr
    assert "would change" in p.stderr and "layers" in p.stderr and "cgroup" in p.stderr
    assert inst.containers() == []
    assert not os.path.exists(os.path.join(inst.state_root, "images"))


def test_json_report(inst):
    p = inst.cli("run", "--name", "js", "--rm", "--json", "--", "/bin/true")
    assert p.returncode == 0
    events = [json.loads(line) for line in p.stderr.splitlines()]
    steps = [e["step"] for e in events if e["event"] == "step" and e["pipeline"] == "run"]
    assert steps == ["image", "layers", "volumes", "cgroup", "veth", "nat", "firewall",
                     "launch"]
    assert all(isinstance(e["ms"], int) for e in events if e["event"] == "step")
    assert events[-1]["event"] == "recap" or any(e["event"] == "recap" for e in events)


def test_second_run_of_a_finished_container_is_refused(inst):
    inst.cli("run", "--name", "twice", "--", "/bin/true", check=True)
    p = inst.cli("run", "--name", "twice", "--", "/bin/true")
    assert p.returncode == 125 and "already exists" in p.stderr
    p = inst.cli("run", "--name", "twice", "--", "/bin/false")
    assert p.returncode == 125 and "different command" in p.stderr
    inst.cli("rm", "twice", check=True)


def test_generated_name(inst):
    p = inst.cli("run", "--rm", "--", "/bin/true")
    assert p.returncode == 0
    assert "name: " in p.stderr


def test_one_step_alone(inst):
    inst.cli("run", "--name", "dbg", "--memory", "64M", "--", "/bin/true", check=True)
    p = inst.cli("step.cgroup", "--name", "dbg", "--check")
    assert p.returncode == 0 and "would change" in p.stdout and "mkdir" in p.stdout
    inst.cli("step.cgroup", "--name", "dbg", check=True)
    p = inst.cli("step.cgroup", "--name", "dbg", "--check", "--json")
    [event] = [json.loads(line) for line in p.stdout.splitlines() if '"step"' in line]
    assert event["status"] == "ok" and "memory=" in event["detail"]
    inst.cli("step.cgroup", "--name", "dbg", "--undo", check=True)
    p = inst.cli("step.cgroup", "--name", "dbg", "--undo")
    assert "ok:" in p.stdout  # the second undo had nothing to do
    inst.cli("rm", "dbg", check=True)


def test_journal_keeps_history(inst):
    inst.cli("run", "--name", "hist", "--", "/bin/true", check=True)
    path = os.path.join(inst.state_root, "containers", "hist", "journal.jsonl")
    entries = [json.loads(line) for line in open(path)]
    assert [e["step"] for e in entries if e["pipeline"] == "run"] == ["image", "layers", "volumes", "cgroup",
                                                                        "veth", "nat", "firewall", "launch"]
    assert {"time", "pipeline", "step", "action", "result", "ms"} <= set(entries[0])
    assert any(e["pipeline"] == "exit" and e["action"] == "undo" for e in entries)
    inst.cli("rm", "hist", check=True)


def test_console_script_is_the_same_program(inst):
    import shutil
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(sys.executable), "diy-docker")
    if not os.path.exists(script):
        script = shutil.which("diy-docker")
    if not script:
        pytest.skip("diy-docker is not installed here (pip install -e . makes it)")
    p = subprocess.run([script, "run", "--rm", "--name", "cs", "busybox", "/bin/sh", "-c", 'printf "[%s]" "$@"', "sh",
                        "a  b", "c'd"], env=inst.env, capture_output=True, text=True, cwd="/", timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "[a  b][c'd]"


def test_list_and_help_are_quick_to_import(inst):
    import subprocess
    import sys

    code = ("import sys, runpy; sys.argv = ['invoke', '--list']; "
            "from invoke import Program; import tasks; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyroute2', 'jinja2') "
            "or m in ('steps.cli.lifecycle', 'steps.cgroup', 'steps.image', 'steps.launch', 'tarfile')))")
    p = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)) or ".",
                       capture_output=True, text=True, env=inst.env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"  # heavy imports wait for the code that needs them


def test_teardown_without_a_record(inst):
    inst.cli("run", "--name", "norec", "--detach", "--", "/bin/sleep", "1000", check=True)
    os.unlink(os.path.join(inst.state_root, "containers", "norec", "info.json"))
    inst.cli("teardown", "norec", check=True)
    assert inst.containers() == []


def test_rm_refuses_a_running_init_whose_monitor_died(inst):
    import signal

    inst.cli("run", "--name", "lost", "--detach", "--", "/bin/sleep", "1000", check=True)
    info = json.loads(inst.cli("inspect", "lost", check=True).stdout)[0]["DiyDocker"]
    os.kill(info["runtime"]["monitor_pid"], signal.SIGKILL)
    assert "monitor lost" in inst.cli("ps", check=True).stdout
    p = inst.cli("rm", "lost")
    assert p.returncode == 125 and "running" in p.stderr
    inst.cli("rm", "--force", "lost", check=True)
