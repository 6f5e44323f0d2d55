"""exec and top: a process joins a running container; asked from inside the container itself."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from steps.runtime.top import cpu_time, parse_stat_fields, start_time, tty_name
from tests.host import processes_mentioning
from tests.test_signals_tty import Terminal, wait_for
from tests.test_terminal import set_window_size


@pytest.fixture
def box(inst):
    """A detached container `box` whose init writes a file and sleeps; torn down after the test."""
    made = []

    def start(*flags: str, name: str = "box") -> str:
        made.append(name)
        inst.cli("run", "--detach", "--name", name, *flags, "--", "/bin/sh", "-c",
                 "echo written-inside > /tmp/mark; exec /bin/sleep 1000", check=True)
        assert wait_for(lambda: inst.cli("exec", name, "--", "cat", "/tmp/mark").stdout == "written-inside\n")
        return name

    yield start
    for name in made:
        inst.cli("teardown", name, timeout=60)


def init_pid(inst, name: str) -> int:
    with open(os.path.join(inst.run_root, "containers", name, "state.json")) as f:
        return json.load(f)["init_pid"]


def status(text: str, keys=("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "Seccomp", "NoNewPrivs")) -> dict:
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k: fields[k].strip() for k in keys}


def test_exit_code_passes_through_and_the_process_is_not_pid1(inst, box):
    box()
    p = inst.cli("exec", "box", "--", "/bin/sh", "-c", 'echo "pid=$$ ppid=$PPID"; exit 3')
    assert p.returncode == 3, p.stderr
    pid, ppid = (int(w.split("=")[1]) for w in p.stdout.split())
    assert pid > 1  # the pid namespace joined only for the fork: a new pid in it, never PID 1
    assert ppid == 0  # its parent (diy-docker) is outside the container's pid namespace
    p = inst.cli("exec", "box", "--", "/bin/sh", "-c", "kill -KILL $$")
    assert p.returncode == 137


def test_same_namespaces_mounts_network_and_cgroup(inst, box):
    box()
    init = init_pid(inst, "box")
    spaces = ("mnt", "uts", "ipc", "net", "pid", "cgroup")
    p = inst.cli("exec", "box", "--", "/bin/sh", "-c",
                 f"for n in {' '.join(spaces)}; do readlink /proc/self/ns/$n; done; hostname; cat /tmp/mark; "
                 "test -e /linuxrc && echo image-file; test -e /etc/debian_version && echo HOST-ROOT; "
                 "cmp /proc/self/cgroup /proc/1/cgroup && echo same-cgroup; cat /proc/net/fib_trie")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[:len(spaces)] == [os.readlink(f"/proc/{init}/ns/{n}") for n in spaces]
    assert lines[len(spaces):len(spaces) + 4] == ["box", "written-inside", "image-file", "same-cgroup"]
    assert "HOST-ROOT" not in lines
    with open(f"/proc/{init}/net/fib_trie") as f:
        assert p.stdout.endswith(f.read())  # the container's addresses, not the host's
    with open("/proc/self/net/fib_trie") as f:
        assert f.read() not in p.stdout


def test_same_confinement_as_the_container(inst, box):
    box()
    p = inst.cli("exec", "box", "--", "/bin/sh", "-c", "cat /proc/self/status; echo ====; cat /proc/1/status")
    assert p.returncode == 0, p.stderr
    mine, its = (status(part) for part in p.stdout.split("===="))
    assert mine == its
    assert mine["Seccomp"] == "2" and mine["NoNewPrivs"] == "0"
    assert int(mine["CapEff"], 16) == 0xA80425FB  # Docker's 14 capabilities


def test_no_new_privileges_and_privileged(inst, box):
    box("--security-opt", "no-new-privileges", name="nnp")
    p = inst.cli("exec", "nnp", "--", "cat", "/proc/self/status")
    assert status(p.stdout)["NoNewPrivs"] == "1" and status(p.stdout)["Seccomp"] == "2"
    box("--privileged", name="priv")
    p = inst.cli("exec", "priv", "--", "/bin/sh", "-c", "cat /proc/self/status; echo ====; cat /proc/1/status")
    mine, its = (status(part) for part in p.stdout.split("===="))
    assert mine == its and mine["Seccomp"] == "0"
    with open("/proc/self/status") as f:
        assert int(mine["CapEff"], 16) == int(status(f.read())["CapEff"], 16)  # every capability we have


def test_env_user_and_workdir(inst, box):
    box("--env", "FROM_RUN=1", name="envbox")
    p = inst.cli("exec", "--env", "FOO=bar baz", "--user", "1000", "--workdir", "/tmp", "envbox", "--",
                 "/bin/sh", "-c", 'echo "$FOO|$FROM_RUN|$HOSTNAME|$PATH"; id -u; pwd; grep CapEff /proc/self/status')
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "bar baz|1|envbox|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert lines[1:3] == ["1000", "/tmp"]
    assert lines[3].split() == ["CapEff:", "0000000000000000"]
    p = inst.cli("exec", "envbox", "--", "/bin/sh", "-c", "id -u; pwd; echo $HOME")
    assert p.stdout.split() == ["0", "/", "/root"]  # the container's own user and workdir


def test_the_containers_user_by_id_prefix(inst, box):
    box("--user", "1000:1000", "--workdir", "/tmp", name="someone")
    with open(os.path.join(inst.state_root, "containers", "someone", "info.json")) as f:
        short = json.load(f)["id"][:12]
    p = inst.cli("exec", short, "--", "/bin/sh", "-c", "id -u; id -g; pwd; grep CapEff /proc/self/status")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["1000", "1000", "/tmp", "CapEff:", "0000000000000000"]


def test_stdin_only_with_interactive(inst, box):
    box()
    p = inst.cli("exec", "--interactive", "box", "--", "cat", input="hello\nworld\n")
    assert p.returncode == 0 and p.stdout == "hello\nworld\n", p.stderr
    p = inst.cli("exec", "box", "--", "cat", input="hello\n")
    assert p.returncode == 0 and p.stdout == "", p.stderr


def test_tty_is_a_terminal_of_the_container(inst, box):
    box()
    term = Terminal(inst, "exec", "--interactive", "--tty", "box", "--", "/bin/sh")
    term.send(b'tty; echo "pid=$$ host=$(hostname)"\n')
    term.expect(b"/dev/pts/0")
    term.expect(b"host=box")
    term.send(b"sleep 100\n")
    time.sleep(0.5)
    term.send(b"\x03")  # Ctrl-C: a byte to the container's pty, reaching its foreground job
    term.send(b"echo still-$((20+22))\n")
    term.expect(b"still-42")
    term.send(b"exit 7\n")
    assert term.exit_code() == 7


def test_tty_has_the_callers_window_size(inst, box):
    box()
    term = Terminal(inst, "exec", "--tty", "box", "--", "stty", "size")
    set_window_size(term.fd, 33, 101)  # long before diy-docker has started
    term.expect(b"33 101")
    assert term.exit_code() == 0


def test_signals_are_forwarded(inst, box):
    box()
    proc = inst.popen("exec", "box", "--", "/bin/sh", "-c",
                      'trap "echo got; exit 5" TERM; echo ready; while :; do sleep 0.1; done')
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 5, err
    assert out.strip() == "got"


def test_detach_leaves_a_process_that_goes_with_the_container(inst, box):
    box()
    p = inst.cli("exec", "--detach", "--json", "box", "--", "/bin/sleep", "777")
    assert p.returncode == 0, p.stderr
    pid = json.loads(p.stdout)["pid"]
    assert processes_mentioning("777") == [pid]
    inside = inst.cli("exec", "box", "--", "ps", "-o", "ppid,args").stdout
    assert any(line.split()[:2] == ["1", "/bin/sleep"] and line.endswith("777") for line in inside.splitlines())
    top = inst.cli("top", "box")
    assert top.returncode == 0, top.stderr
    rows = [line.split() for line in top.stdout.splitlines()]
    assert rows[0] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert [str(pid), str(init_pid(inst, "box"))] in [r[1:3] for r in rows]  # its parent: the init
    assert any(r[7:] == ["/bin/sleep", "1000"] and r[0] == "root" for r in rows[1:])
    inst.cli("stop", "box", check=True)
    assert wait_for(lambda: not processes_mentioning("777"))
    inst.cli("rm", "box", check=True)


def test_refused_when_not_running_or_unknown(inst, box):
    inst.cli("run", "--name", "done", "--", "/bin/true", check=True)
    for args, words in ((("exec", "done", "--", "true"), "cannot exec in done: it is not running"),
                        (("exec", "nobody", "--", "true"), "cannot exec in nobody: no such container"),
                        (("top", "done"), "cannot list the processes of done: it is not running")):
        p = inst.cli(*args)
        assert p.returncode != 0 and words in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    inst.cli("rm", "done", check=True)


def test_missing_or_unexecutable_command(inst, box):
    box()
    for command, code, words in ((["no-such-command"], 127, "not found"), (["/etc/passwd"], 126, "not executable")):
        p = inst.cli("exec", "box", "--", *command)
        assert p.returncode == code and words in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flags,words", [
    ((), "bad command"),
    (("--user", "a:b:c"), "bad user"),
    (("--workdir", "relative"), "bad workdir"),
    (("--env", "1X=y"), "bad env"),
])
def test_bad_input_changes_nothing(inst, box, flags, words):
    box()
    before = inst.cli("top", "box").stdout
    p = inst.cli("exec", *flags, "box", *(["--", "true"] if flags else []))
    assert p.returncode == 125 and words in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert [r.split()[1] for r in inst.cli("top", "box").stdout.splitlines()] == \
        [r.split()[1] for r in before.splitlines()]


def test_unknown_user_is_refused_in_one_line(inst, box):
    box()
    p = inst.cli("exec", "--user", "nosuchuser", "box", "--", "true")
    assert p.returncode == 125 and "unable to find user nosuchuser" in p.stderr, p.stderr


# --- top's columns, on captured text ---------------------------------------

def test_top_parses_stat_with_odd_comm():
    text = "42 (a b) c) S 7 42 42 34816 42 4194560 0 0 0 0 150 50 0 0 20 0 1 0 12345 0 0"
    fields = parse_stat_fields(text)
    assert fields == {"comm": "a b) c", "ppid": 7, "tty_nr": 34816, "cpu_ticks": 200, "start_ticks": 12345}


def test_top_columns():
    assert tty_name(0) == "?"
    assert tty_name(136 << 8 | 3) == "pts/3"
    assert tty_name(4 << 8 | 1) == "tty1"
    assert cpu_time(0) == "00:00:00"
    assert cpu_time(90061) == "1-01:01:01"
    now = time.mktime((2026, 6, 15, 12, 0, 0, 0, 0, -1))
    assert start_time(now - 3600, now) == "11:00"
    assert start_time(now - 40 * 86400, now) == "May06"
    assert start_time(now - 400 * 86400, now) == "2025"


@pytest.mark.parametrize("fault", ["exec.join.joined:fail", "exec.join.joined:kill",
                                   "exec.process.before_exec:fail"])
def test_a_failure_between_fork_and_exec_runs_nothing(inst, box, fault):
    box()
    before = inst.cli("top", "box").stdout
    p = inst.cli("exec", "box", "--", "/bin/sleep", "888", fault=fault)
    assert p.returncode == 125 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "cannot exec in box" in p.stderr
    assert not processes_mentioning("888")
    assert [r.split()[1] for r in inst.cli("top", "box").stdout.splitlines()] == \
        [r.split()[1] for r in before.splitlines()]
    p = inst.cli("exec", "--workdir", "/no/such/dir", "box", "--", "/bin/sleep", "888")
    assert p.returncode == 125 and "/no/such/dir" in p.stderr and not processes_mentioning("888"), p.stderr
