"""The container's log: Docker's json-file layout, written by the monitor, read by `logs`.

One JSON object per line, {"log": TEXT, "stream": "stdout"|"stderr", "time": RFC3339Nano UTC},
in container.log; when it reaches max-size it becomes container.log.1 (the older ones move to
.2, ...) and a new one starts, keeping max-file files in all. The writer is the monitor's relay
tee: one write per chunk the container wrote, never per byte, and never blocking the container
(a write error - a full disk - drops the records and counts them).
"""
from __future__ import annotations

import json
import os
import re
import time
from json.encoder import encode_basestring_ascii as escape

from steps import BadInput

# Docker's json-file default is unbounded, which is how a chatty container fills a disk: capped
# here by default, 30 MiB at most per container.
DEFAULT_OPTS = {"max-size": 10 * 1024 * 1024, "max-file": 3}
SPLIT = 16 * 1024  # Docker splits a longer line into 16 KiB records, each without its newline
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


# --- writing (the monitor) -------------------------------------------------------

def stamp(ns: int) -> str:
    """RFC3339Nano in UTC with all nine digits, as `docker logs --timestamps` prints it; fixed
    width, so records compare as strings."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def encode(stream: str, data: bytes, when: str) -> list[str]:
    """The records of one chunk: a line each; what follows the last newline is a record of
    its own (the pipe had no more for now), and so is every 16 KiB of a longer line. Bad
    UTF-8 becomes U+FFFD, as with Docker. ASCII-only JSON, so a record's length is its size."""
    suffix = f',"stream":"{stream}","time":"{when}"}}\n'
    parts = data.decode(errors="replace").split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    if len(data) > SPLIT and any(len(line) > SPLIT for line in lines):
        lines = [line[i:i + SPLIT] for line in lines for i in range(0, len(line), SPLIT)]
    return ['{"log":' + escape(line) + suffix for line in lines]  # escape: json's C encoder


class LogWriter:
    """Appends records to the container's log, rotating at max-size."""

    def __init__(self, path: str, opts: dict | None = None):
        opts = {**DEFAULT_OPTS, **(opts or {})}
        self.path, self.max_size, self.max_file = path, opts["max-size"], opts["max-file"]
        self.fd: int | None = None
        self.size = 0
        self.dropped = 0  # records lost to write errors: the container must never wait for a disk

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.size = os.fstat(self.fd).st_size

    def record(self, stream: str, data: bytes) -> None:
        records = encode(stream, data, stamp(time.time_ns()))
        if not records:
            return
        blob = "".join(records)
        if self.size + len(blob) - len(records[-1]) < self.max_size:  # no rotation in this chunk
            self.write(blob.encode(), len(records))
            return
        batch: list[str] = []
        used = 0
        for rec in records:  # as Docker: rotate once the file has reached max-size, so a file
            if batch and self.size + used >= self.max_size:  # is at most max-size + one record
                self.write("".join(batch).encode(), len(batch))
                batch, used = [], 0
            if not batch and self.size >= self.max_size:
                self.rotate()
            batch.append(rec)
            used += len(rec)
        if batch:
            self.write("".join(batch).encode(), len(batch))

    def write(self, blob: bytes, count: int) -> None:
        try:
            if self.fd is None:
                self.open()
            while blob:
                n = os.write(self.fd, blob)
                self.size += n
                blob = blob[n:]
        except OSError:
            self.dropped += count

    def rotate(self) -> None:
        """container.log -> .1 -> .2 ...; the oldest beyond max-file goes. Readers that follow
        notice the new inode at the path."""
        self.close()
        try:
            if self.max_file == 1:
                os.unlink(self.path)
            for i in range(self.max_file - 1, 0, -1):
                older = self.path if i == 1 else f"{self.path}.{i - 1}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{i}")
        except OSError:
            pass  # keep appending to whatever is there: losing history beats losing the container
        self.size = 0

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


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
