"""The container's log: Docker's json-file layout, written by the monitor, read by `logs`.

One JSON object per line, {"log": TEXT, "stream": "stdout"|"stderr", "time": RFC3339Nano UTC},
in container.log; when it reaches max-size it becomes container.log.1 (the older ones move to
.2, ...) and a new one starts, keeping max-file files in all. The writer is the monitor's relay
tee: one write per chunk the container wrote, never per byte, and never blocking the container
(a write error - a full disk - drops the records and counts them). The writer lives in
steps/runtime/shim.py, which the detached monitor runs under a bare interpreter: one writer for
both paths.
"""
from __future__ import annotations

import json
import os
import re

from steps import BadInput
from steps.runtime.shim import DEFAULT_OPTS, SPLIT, LogWriter, encode, stamp  # noqa: F401 (the writer, shared)

_SIZE = re.compile(r"^(\d+)([kmg]?)b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


# --- options -------------------------------------------------------------------

def parse_log_opts(items: list[str] | None) -> dict:
    """`--log-opt max-size=10m --log-opt max-file=3` -> {"max-size": bytes, "max-file": int}."""
    opts = dict(DEFAULT_OPTS)
    for item in items or []:
        key, eq, value = (item or "").partition("=")
        if key == "max-size" and eq:
            opts[key] = parse_size(item, value)
        elif key == "max-file" and eq:
            if not value.isdigit() or not 1 <= int(value) <= 100:
                raise BadInput(f"bad log-opt {item!r}: max-file is a whole number 1-100, e.g. max-file=3")
            opts[key] = int(value)
        else:
            raise BadInput(f"bad log-opt {item!r}: expected max-size=SIZE or max-file=N, e.g. max-size=10m")
    return opts


def parse_size(item: str, value: str) -> int:
    m = _SIZE.fullmatch(value.strip())
    size = int(m[1]) * _UNITS[m[2].lower()] if m else 0
    if size < 1024:
        raise BadInput(f"bad log-opt {item!r}: max-size is at least 1k, with k, m or g, e.g. max-size=10m")
    return size


# --- reading (`logs`, `attach`) ----------------------------------------------------

def log_files(path: str) -> list[str]:
    """The log's files, oldest first: container.log.N ... container.log.1, container.log."""
    rotated = []
    while os.path.exists(f"{path}.{len(rotated) + 1}"):
        rotated.append(f"{path}.{len(rotated) + 1}")
    return rotated[::-1] + [path]


def parse(line: bytes) -> tuple[str, str | None, bytes]:
    """(stream, time, bytes) of one line; a line of the plain-text log an older version wrote
    reads as stdout without a time."""
    if line.startswith(b"{"):
        try:
            rec = json.loads(line)
            return rec["stream"], rec.get("time"), rec["log"].encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
    return "stdout", None, line


def in_window(when: str | None, since: str | None, until: str | None) -> bool:
    """Whether a record's time is within [since, until); times are fixed-width RFC3339Nano."""
    if since is None and until is None:
        return True
    if when is None or not _STAMP.fullmatch(when):
        return False
    return (since is None or when >= since) and (until is None or when < until)


def read_to_end(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def open_log(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


class Follower:
    """Reads the live log file from where the last read ended, across rotations (a new file at
    the path: the old one is read to its end first)."""

    def __init__(self, path: str, fd: int | None, rest: bytes = b""):
        self.path, self.fd, self.rest = path, fd, rest

    def lines(self) -> list[bytes]:
        out = self.split(read_to_end(self.fd) if self.fd is not None else b"")
        if self.rotated():
            if self.fd is not None:
                out += self.split(read_to_end(self.fd))  # what was written before the rename
                os.close(self.fd)
            self.fd, self.rest = open_log(self.path), b""  # records are whole: no part is left
            out += self.split(read_to_end(self.fd) if self.fd is not None else b"")
        return out

    def split(self, data: bytes) -> list[bytes]:
        *complete, self.rest = (self.rest + data).split(b"\n")
        return [line + b"\n" for line in complete]

    def rotated(self) -> bool:
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return False  # between the rename and the writer's next record
        return self.fd is None or os.fstat(self.fd).st_ino != inode

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def recorded(path: str, tail: int | None, since: str | None, until: str | None,
             follow: bool) -> tuple[list[tuple], Follower]:
    """The records to show, oldest first, and a Follower at the end of what was read. Files are
    read newest first, and only as far back as --tail needs."""
    fd = open_log(path)
    data = read_to_end(fd) if fd is not None else b""
    *complete, rest = data.split(b"\n")
    complete = [line + b"\n" for line in complete]
    if not follow and rest:  # a plain-text log of an older version may end without a newline
        complete, rest = complete + [rest], b""
    picked: list[tuple] = []
    for lines in newest_first(path, complete):
        for line in reversed(lines):
            if tail is not None and len(picked) >= tail:
                return picked[::-1], Follower(path, fd, rest)
            rec = parse(line)
            if in_window(rec[1], since, until):
                picked.append(rec)
    return picked[::-1], Follower(path, fd, rest)


def newest_first(path: str, live: list[bytes]):
    """The lines of the live file (already read), then of each rotated one, newest first."""
    yield live
    for older in reversed(log_files(path)[:-1]):
        try:
            with open(older, "rb") as f:
                yield [line + b"\n" for line in f.read().split(b"\n")[:-1]]
        except FileNotFoundError:
            continue  # rotated away meanwhile
