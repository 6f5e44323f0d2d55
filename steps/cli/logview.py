"""A container's output after the fact and live: logs, wait, attach.

All three read what the monitor records (steps/runtime/logfile.py) and the runtime state;
none talks to the monitor, so they cost a file read and a few /proc lookups.
"""
from __future__ import annotations

import calendar
import os
import re
import sys
import time

from steps import BadInput, DiyError, config
from steps.runtime.logfile import Follower, in_window, open_log, parse, recorded, stamp
from steps.state import existing_container, load_record

POLL = 0.05  # seconds between looks at the log while following
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)(?:T(\d\d:\d\d(?::\d\d)?)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)?)?")


# --- arguments -------------------------------------------------------------------

def parse_tail(text) -> int | None:
    """--tail N|all; None is all."""
    if text is None or str(text) == "all":
        return None
    if not str(text).isdigit():
        raise BadInput(f"bad tail {text!r}: a number of lines or all, e.g. --tail 20")
    return int(text)


def parse_time(text, flag: str, now_ns: int | None = None) -> str | None:
    """--since/--until as Docker takes them: RFC3339 (a date alone, local time without a zone,
    fractional seconds allowed), Unix seconds (with a fraction), or a duration before now
    (10m, 1h30m). Returned as the fixed-width stamp the log's records carry."""
    if text in (None, ""):
        return None
    text = str(text)
    now_ns = time.time_ns() if now_ns is None else now_ns
    if re.fullmatch(r"\d+(\.\d{1,9})?", text):
        whole, _, frac = text.partition(".")
        return stamp(int(whole) * 10**9 + int(frac.ljust(9, "0") or 0))
    if re.fullmatch(f"(?:{_DURATION.pattern})+", text):
        total = sum(float(n) * _UNIT_NS[u] for n, u in _DURATION.findall(text))
        return stamp(now_ns - int(total))
    m = _RFC3339.fullmatch(text)
    if not m:
        raise BadInput(f"bad {flag} {text!r}: expected RFC3339 (2024-05-01T12:00:00.5Z), "
                       "Unix seconds (1714564800) or a duration (10m, 1h30m)")
    return stamp(rfc3339_ns(m))


def rfc3339_ns(m: re.Match) -> int:
    date, clock, frac, zone = m.groups()
    clock = clock or "00:00:00"
    clock += ":00" if clock.count(":") == 1 else ""
    try:
        parts = time.strptime(f"{date}T{clock}", "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise BadInput(f"bad time {m.group(0)!r}: no such date or time of day") from None
    if zone is None:  # Docker reads a time without a zone as local time
        seconds = int(time.mktime(parts))
    else:
        seconds = calendar.timegm(parts)
        if zone != "Z":
            sign = -1 if zone[0] == "+" else 1
            seconds += sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 10**9 + int((frac or "").ljust(9, "0") or 0)


def existing(ref: str) -> object:
    """The container's names; an unknown one is one line and exit 1, as Docker."""
    return existing_container(config.load(), ref, 1)[0]


# --- printing --------------------------------------------------------------------

def show(records: list[tuple], timestamps: bool) -> None:
    """stdout records to our stdout, stderr records to our stderr."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for stream, when, data in records:
        if timestamps and when:
            data = when.encode() + b" " + data
        (err if stream == "stderr" else out).write(data)
    out.flush()
    err.flush()


# --- the commands ----------------------------------------------------------------

class Watch:
    """The monitor of the container as it runs now. Its runtime state file goes before the
    monitor has written the exit code, so the process itself is watched, not the file."""

    def __init__(self, names):
        from steps.launch import runtime_facts

        rt, init_alive, monitor_alive = runtime_facts(names)
        self.names = names
        self.running = init_alive and monitor_alive
        self.monitor = (rt["monitor_pid"], rt["monitor_start"]) if monitor_alive else None
        self.init = (rt["init_pid"], rt["init_start"]) if init_alive else None

    def gone(self) -> bool:
        """True once nothing more will be written: the monitor has recorded the exit and ended."""
        from steps.facts import process_alive

        return self.monitor is None or not process_alive(*self.monitor)

    def exited(self) -> bool:
        """True once this run has ended and its exit code is recorded. A monitor with a restart
        policy stays, but the run ends here, as for Docker's wait and attach."""
        from steps.facts import process_alive

        if self.gone():
            return True
        if self.init is not None and process_alive(*self.init):
            return False
        last = (load_record(self.names) or {}).get("last") or {}
        return bool(last.get("finished_at")) and last.get("exit_code") is not None


def follow(follower: Follower, done, timestamps: bool, since: str | None, until: str | None,
           pause=time.sleep) -> None:
    """Print new records as they come, until done() (or --until has passed)."""
    while True:
        finished = done()  # looked at first: what is read after it is all there is
        records = [parse(line) for line in follower.lines()]
        show([r for r in records if in_window(r[1], since, until)], timestamps)
        if finished or (until is not None and stamp(time.time_ns()) >= until):
            return
        pause(POLL)


def logs(ref: str, follow_: bool = False, tail=None, timestamps: bool = False, since=None,
         until=None) -> int:
    tail_n = parse_tail(tail)
    since_s, until_s = parse_time(since, "--since"), parse_time(until, "--until")
    names = existing(ref)
    watch = Watch(names) if follow_ else None  # before the read: nothing written meanwhile is lost
    records, follower = recorded(names.log, tail_n, since_s, until_s, follow_)
    try:
        show(records, timestamps)
        if watch is not None:
            follow(follower, watch.gone, timestamps, since_s, until_s)
    except KeyboardInterrupt:
        return 130  # Ctrl-C ends a follow, as docker logs -f: no message
    finally:
        follower.close()
    return 0


def exit_code(names) -> int:
    """The recorded exit code of the last run; 137 when the init died unobserved (its monitor
    was killed: `stop` could only SIGKILL it)."""
    record = load_record(names) or {}
    code = (record.get("last") or {}).get("exit_code")
    return 137 if code is None and (record.get("last") or {}).get("finished_at") else code or 0


def wait(ref: str) -> int:
    """Block until the container is not running; print its exit code."""
    names = existing(ref)
    watch = Watch(names)
    while not watch.exited():
        time.sleep(POLL)
    if load_record(names) is None:  # --rm: removed with its record
        raise DiyError(f"cannot wait for {ref}: it was removed (--rm) before its exit code was read", 1)
    print(exit_code(names), flush=True)
    return 0


class StdinForward:
    """Our stdin to a detached --interactive container, through its monitor's socket. Our EOF
    ends the forwarding only: the container's stdin stays open for the next attach (Docker's)."""

    def __init__(self, path: str):
        import socket

        self.sock: object | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.connect(path)
        except OSError:
            self.close()  # the container is ending: output only

    def pause(self, seconds: float) -> None:
        """Wait up to seconds, forwarding what our stdin has meanwhile."""
        import select

        if self.sock is None:
            time.sleep(seconds)
            return
        if not select.select([0], [], [], seconds)[0]:
            return
        data = os.read(0, 65536)
        try:
            self.sock.sendall(data) if data else self.close()
        except OSError:
            self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def attach(ref: str) -> int:
    """Its output from now on until it exits; then its exit code. Our stdin goes to a container
    run with --interactive. Ctrl-C detaches and leaves the container running (as Docker's
    --sig-proxy=false: the container never gets our signals)."""
    names = existing(ref)
    watch = Watch(names)
    if not watch.running:
        raise DiyError(f"cannot attach to {ref}: it is not running; start it first (invoke start {ref})", 1)
    fd = open_log(names.log)
    if fd is not None:
        os.lseek(fd, 0, os.SEEK_END)
    follower = Follower(names.log, fd)
    record = load_record(names) or {}
    stdin = StdinForward(names.attach_socket) if record.get("interactive") else None
    try:
        follow(follower, watch.exited, False, None, None, stdin.pause if stdin else time.sleep)
    except KeyboardInterrupt:
        return 0  # detached: the container runs on
    finally:
        follower.close()
        if stdin is not None:
            stdin.close()
    return exit_code(names) if load_record(names) is not None else 0
