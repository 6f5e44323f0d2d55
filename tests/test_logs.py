"""The container's log (json-file), `logs` and its flags, `wait`, `attach`."""
from __future__ import annotations

import json
import os
import re
import select
import signal
import time

import pytest

from steps import BadInput
from steps.cli.logview import parse_tail, parse_time
from steps.runtime.logfile import LogWriter, encode, log_files, parse, parse_log_opts, stamp

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"
TICK = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"


def log_path(inst, name: str) -> str:
    return os.path.join(inst.state_root, "containers", name, "container.log")


def read_lines(proc, n: int, timeout: float = 30) -> list[str]:
    """The first n lines a child prints, without blocking past the timeout."""
    buf, deadline = b"", time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while buf.count(b"\n") < n:
        assert time.monotonic() < deadline, f"only {buf!r} after {timeout}s"
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"EOF after {buf!r}"
            buf += chunk
    return buf.decode().splitlines()[:n]


# --- pure logic -------------------------------------------------------------------

def test_records_round_trip_and_split():
    recs = encode("stderr", b"one\ntwo\npart", "2024-01-02T03:04:05.000000001Z")
    assert [parse(r.encode()) for r in recs] == [
        ("stderr", "2024-01-02T03:04:05.000000001Z", b"one\n"),
        ("stderr", "2024-01-02T03:04:05.000000001Z", b"two\n"),
        ("stderr", "2024-01-02T03:04:05.000000001Z", b"part")]  # a partial line is a record
    assert json.loads(recs[0]) == {"log": "one\n", "stream": "stderr", "time": "2024-01-02T03:04:05.000000001Z"}
    long = encode("stdout", b"x" * 40000 + b"\n", "t")
    assert [len(json.loads(r)["log"]) for r in long] == [16384, 16384, 40001 - 32768]
    assert parse(b"plain old text\n") == ("stdout", None, b"plain old text\n")
    assert json.loads(encode("stdout", "é\"\\\x01".encode() + b"\xff", "t")[0])["log"] == "é\"\\\x01\ufffd"


def test_log_opts():
    assert parse_log_opts([]) == {"max-size": 10 * 1024 * 1024, "max-file": 3}
    assert parse_log_opts(["max-size=1k", "max-file=2"]) == {"max-size": 1024, "max-file": 2}
    assert parse_log_opts(["max-size=5M"])["max-size"] == 5 * 1024 * 1024
    for bad in ("max-size=big", "max-size=10", "max-file=0", "max-file=x", "mode=non-blocking", "max-size"):
        with pytest.raises(BadInput, match=r"^bad log-opt "):
            parse_log_opts([bad])


def test_time_arguments():
    now = 1_700_000_000 * 10**9
    assert parse_time("1700000000", "--since") == "2023-11-14T22:13:20.000000000Z"
    assert parse_time("1700000000.5", "--since") == "2023-11-14T22:13:20.500000000Z"
    assert parse_time("2023-11-14T22:13:20.25Z", "--since") == "2023-11-14T22:13:20.250000000Z"
    assert parse_time("2023-11-14T23:13:20+01:00", "--since") == "2023-11-14T22:13:20.000000000Z"
    assert parse_time("1h30m", "--since", now) == stamp(now - 5400 * 10**9)
    assert parse_time("10m", "--since", now) == stamp(now - 600 * 10**9)
    assert parse_time(None, "--since") is None
    for bad in ("yesterday", "2023-13-45", "10x"):
        with pytest.raises(BadInput, match=r"^bad "):
            parse_time(bad, "--since")
    assert parse_tail("all") is None and parse_tail("2") == 2
    with pytest.raises(BadInput, match=r"^bad tail '-1'"):
        parse_tail("-1")


def test_writer_rotates(tmp_path):
    path = str(tmp_path / "container.log")
    w = LogWriter(path, {"max-size": 1024, "max-file": 2})
    for i in range(100):
        w.record("stdout", f"line {i}\n".encode() * 3)
    w.close()
    assert log_files(path) == [path + ".1", path] and not os.path.exists(path + ".2")
    for f in log_files(path):
        assert os.path.getsize(f) <= 1024 + 100
    last = open(path).read().splitlines()[-1]
    assert json.loads(last)["log"] == "line 99\n"


def test_a_full_disk_drops_records_and_never_raises():
    w = LogWriter("/dev/full", {"max-size": 1024, "max-file": 2})
    w.open()
    w.record("stdout", b"a\nb\n")
    w.record("stderr", b"c")
    w.close()
    assert w.dropped == 3


def test_follower_reads_across_rotations(tmp_path):
    from steps.runtime.logfile import Follower, open_log

    path = str(tmp_path / "container.log")
    w = LogWriter(path, {"max-size": 1024, "max-file": 3})
    w.record("stdout", b"first\n")
    follower = Follower(path, open_log(path))
    seen = [parse(line)[2] for line in follower.lines()]
    for i in range(200):
        w.record("stdout", b"%d\n" % i)
        if i % 7 == 0:
            seen += [parse(line)[2] for line in follower.lines()]
    w.close()
    seen += [parse(line)[2] for line in follower.lines()]
    follower.close()
    assert seen == [b"first\n"] + [b"%d\n" % i for i in range(200)]
    assert len(log_files(path)) == 3


# --- end to end ---------------------------------------------------------------------

def test_follow_a_ticking_container_until_it_stops(inst):
    inst.cli("run", "--detach", "--name", "tick", "--", "sh", "-c", TICK, check=True)
    follower = inst.popen("logs", "--follow", "tick")
    try:
        assert read_lines(follower, 3) == ["tick 0", "tick 1", "tick 2"]
        inst.cli("stop", "tick", "--time", "1", check=True)
        assert follower.wait(timeout=20) == 0
    finally:
        follower.kill()
        follower.communicate()
    records = [json.loads(line) for line in open(log_path(inst, "tick"))]  # the container's words only
    assert records and all(r["stream"] == "stdout" and r["log"].startswith("tick ") for r in records)
    assert inst.cli("wait", "tick", check=True).stdout == "137\n"  # sh as PID 1 ignores SIGTERM
    inst.cli("rm", "tick", check=True)


def test_foreground_run_keeps_streams_apart(inst):
    p = inst.cli("run", "--name", "fg", "--", "sh", "-c", "echo out; echo err >&2; echo out2", check=True)
    assert p.stdout == "out\nout2\n" and "err\n" in p.stderr  # relayed as before
    logs = inst.cli("logs", "fg", check=True)
    assert (logs.stdout, logs.stderr) == ("out\nout2\n", "err\n")
    streams = [json.loads(line)["stream"] for line in open(log_path(inst, "fg"))]
    assert sorted(streams) == ["stderr", "stdout", "stdout"]  # two pipes: no order between them
    assert not os.path.exists(os.path.join(inst.state_root, "containers", "fg", "monitor.log"))
    inst.cli("rm", "fg", check=True)


def test_tail_timestamps_since_until(inst):
    inst.cli("run", "--name", "five", "--", "sh", "-c",
             "for i in 1 2 3 4; do echo l$i; done; sleep 0.5; echo l5", check=True)
    assert inst.cli("logs", "--tail", "2", "five", check=True).stdout == "l4\nl5\n"
    assert inst.cli("logs", "--tail", "all", "five", check=True).stdout == "l1\nl2\nl3\nl4\nl5\n"
    assert inst.cli("logs", "--tail", "0", "five", check=True).stdout == ""
    stamped = inst.cli("logs", "--timestamps", "five", check=True).stdout.splitlines()
    assert all(re.fullmatch(STAMP + r" l\d", line) for line in stamped), stamped
    t4, t5 = stamped[3].split()[0], stamped[4].split()[0]

    def ns(s: str) -> int:
        return int(time.mktime(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone) * 10**9 + int(s[20:29])
    mid = (ns(t4) + ns(t5)) // 2
    since = f"{mid // 10**9}.{mid % 10**9:09d}"
    assert inst.cli("logs", "--since", since, "five", check=True).stdout == "l5\n"
    assert inst.cli("logs", "--since", t5, "five", check=True).stdout == "l5\n"
    assert inst.cli("logs", "--until", since, "--tail", "1", "five", check=True).stdout == "l4\n"
    assert inst.cli("logs", "--since", "1h", "five", check=True).stdout.count("\n") == 5
    p = inst.cli("logs", "--since", "last tuesday", "five")
    assert p.returncode == 125 and p.stderr.startswith("diy-docker: bad --since 'last tuesday'")
    inst.cli("rm", "five", check=True)


def test_rotation_caps_the_log(inst):
    script = "i=0; while [ $i -lt 200 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done"
    inst.cli("run", "--name", "rot", "--log-opt", "max-size=1k", "--log-opt", "max-file=2", "--",
             "sh", "-c", script, check=True)
    path = log_path(inst, "rot")
    assert log_files(path) == [path + ".1", path] and not os.path.exists(path + ".2")
    for f in log_files(path):
        assert os.path.getsize(f) <= 1024 + 120, (f, os.path.getsize(f))
    out = inst.cli("logs", "rot", check=True).stdout.splitlines()
    assert out[-1] == "line-199-" + "x" * 24
    first = int(out[0].split("-")[1])
    assert out == [f"line-{i}-" + "x" * 24 for i in range(first, 200)]
    assert inst.cli("logs", "--tail", "3", "rot", check=True).stdout.split() == [
        f"line-{i}-" + "x" * 24 for i in (197, 198, 199)]
    inst.cli("rm", "rot", check=True)


@pytest.mark.parametrize("opt", ["max-size=lots", "max-file=0", "max-size=10", "compress=true"])
def test_bad_log_opt_is_refused_before_anything_is_made(inst, opt):
    p = inst.cli("run", "--name", "badlog", "--log-opt", opt, "--", "true")
    assert p.returncode == 125
    assert p.stderr.strip().startswith(f"diy-docker: bad log-opt '{opt}'") and p.stderr.count("\n") == 1
    assert inst.containers() == [] and not os.path.exists(os.path.join(inst.run_root, "locks", "badlog.lock"))


def test_plain_text_log_of_an_older_version(inst):
    inst.cli("run", "--name", "old", "--", "true", check=True)
    with open(log_path(inst, "old"), "w") as f:
        f.write("written before json-file\nno newline")
    p = inst.cli("logs", "old", check=True)
    assert (p.stdout, p.stderr) == ("written before json-file\nno newline", "")
    inst.cli("rm", "old", check=True)


def test_wait_prints_the_exit_code(inst):
    inst.cli("run", "--detach", "--name", "three", "--", "sh", "-c", "sleep 0.5; exit 3", check=True)
    p = inst.cli("wait", "three", check=True)
    assert p.stdout == "3\n"
    assert inst.cli("wait", "three", check=True).stdout == "3\n"  # already exited: at once
    inst.cli("rm", "three", check=True)
    p = inst.cli("wait", "nosuch")
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "no such container: nosuch" in p.stderr


def test_attach_sees_live_output_and_returns_the_code(inst):
    script = "sleep 1; i=0; while [ $i -lt 10 ]; do echo tick $i; i=$((i+1)); sleep 0.2; done; echo bye >&2; exit 5"
    inst.cli("run", "--detach", "--name", "att", "--", "sh", "-c", script, check=True)
    attached = inst.popen("attach", "att")
    try:
        out, err = attached.communicate(timeout=60)
    finally:
        attached.kill()
    assert attached.returncode == 5, err
    assert out.splitlines()[-1] == "tick 9" and err == "bye\n"
    p = inst.cli("attach", "att")
    assert p.returncode == 1 and "is not running" in p.stderr
    inst.cli("rm", "att", check=True)


def test_attach_forwards_stdin_to_an_interactive_container(inst):
    import subprocess

    inst.cli("run", "--detach", "--interactive", "--name", "ask", "--", "sh", "-c",
             "read a; echo got $a; read b; echo then $b; exit 4", check=True)
    sock = os.path.join(inst.run_root, "containers", "ask", "attach.sock")
    assert os.stat(sock).st_mode & 0o777 == 0o600
    first = inst.popen("attach", "ask", stdin=subprocess.PIPE)
    try:
        first.stdin.write("one\n")
        first.stdin.flush()
        assert read_lines(first, 1) == ["got one"]
        first.send_signal(signal.SIGINT)  # Ctrl-C detaches; the container runs on
        assert first.wait(timeout=20) == 0
    finally:
        first.kill()
        first.communicate()
    assert os.path.exists(sock)  # its monitor still serves it: the container runs
    second = inst.popen("attach", "ask", stdin=subprocess.PIPE)
    second.stdin.write("two\n")
    second.stdin.flush()
    out, err = second.communicate(timeout=30)
    assert second.returncode == 4, err
    assert out == "then two\n"
    inst.cli("rm", "ask", check=True)


def test_attach_to_a_detached_terminal(inst):
    import subprocess

    inst.cli("run", "--detach", "--tty", "--interactive", "--name", "term", "--", "sh", check=True)
    attached = inst.popen("attach", "term", stdin=subprocess.PIPE)
    out, err = attached.communicate("echo hi-$((6*7)); exit 7\n", timeout=30)
    assert attached.returncode == 7, err
    assert "hi-42\n" in out and err == ""  # a terminal has one stream, as with docker -t
    logs = inst.cli("logs", "term", check=True)
    assert "hi-42\n" in logs.stdout and logs.stderr == ""
    inst.cli("rm", "term", check=True)
