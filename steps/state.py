"""Container record (info.json), runtime state, locks, journal, atomic writes."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time

from steps import DiyError
from steps.names import Names, is_name


def atomic_write(path: str, data: str, mode: int = 0o644) -> None:
    """Write under a temporary name in the same directory, fsync, then rename."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            write_all(fd, data.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        remove_file(tmp)  # a full disk leaves no half-written file behind
        if e.filename is None:  # os.write names no file: the line says which file system filled
            raise OSError(e.errno, e.strerror, path) from None
        raise
    except BaseException:
        remove_file(tmp)
        raise


def write_all(fd: int, data: bytes) -> None:
    """os.write until all is written (a short write is how a nearly full disk answers first)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def dead_writes(directory: str) -> list[str]:
    """The `*.tmp-<pid>` files atomic_write left in directory when its process was killed before
    the rename (a pid alive again keeps its file: it may be that process's)."""
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return []
    return [os.path.join(directory, e) for e in entries
            if ".tmp-" in e and (pid := e.rpartition(".tmp-")[2]).isdigit() and not os.path.exists(f"/proc/{pid}")]


def write_json(path: str, value) -> None:
    atomic_write(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: str):
    """The JSON in path, or None when the file does not exist."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DiyError(f"cannot read {path}: {e}") from None


def remove_file(path: str) -> bool:
    """Remove path; "already gone" counts as done. True when something was removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def remove_empty(*dirs: str) -> None:
    """rmdir each of dirs that exists and is empty, in order."""
    for d in dirs:
        try:
            os.rmdir(d)
        except OSError:
            pass


def read_value(path: str) -> str | None:
    """A small kernel file (cgroupfs, /proc/sys), stripped; None when it does not exist."""
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def write_value(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {value} to {path}: {e.strerror}") from None


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- records -----------------------------------------------------------------

def load_record(names: Names) -> dict | None:
    return read_json(names.record)


def private_dir(path: str) -> None:
    """A directory only root may enter (as Docker's /var/lib/docker): image layers and
    container trees hold setuid files and device nodes that host users must not reach."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o700)


RESERVE = 64 << 10  # a record is 1-3 KB; its atomic write needs room for a second copy


def save_record(names: Names, record: dict) -> None:
    """Write the record. A container whose own writes filled the disk must still be able to
    stop, exit and be removed: its reserve (ballast kept beside the record) gives way to it."""
    private_dir(os.path.dirname(names.container_dir))
    try:
        write_json(names.record, record)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not remove_file(names.reserve):
            raise
        write_json(names.record, record)
    keep_reserve(names.reserve)


def keep_reserve(path: str) -> None:
    """Put the ballast back when there is room for it (best effort: a full disk goes without)."""
    if os.path.exists(path):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        os.posix_fallocate(fd, 0, RESERVE)
    except OSError:
        remove_file(path)
    finally:
        os.close(fd)


def update_record(names: Names, **fields) -> dict | None:
    """Merge fields into the record's "last" section (status of the latest start)."""
    record = load_record(names)
    if record is None:
        return None
    record.setdefault("last", {}).update(fields)
    save_record(names, record)
    return record


def find_container(instance, ref: str) -> Names:
    """The container a user means: its name, else its ID or a unique prefix of it (as Docker).
    An unknown ref comes back as the name it is, so the caller's "no such container" speaks."""
    names = Names(instance, ref) if is_name(ref) else None
    if names is not None and os.path.exists(names.record):
        return names
    if re.fullmatch(r"[0-9a-f]{1,64}", ref or ""):
        from steps.names import containers_dir

        root = containers_dir(instance)
        matches = []
        for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            try:
                record = read_json(os.path.join(root, name, "info.json")) or {}
            except DiyError:
                continue
            if str(record.get("id", "")).startswith(ref):
                matches.append(name)
        if len(matches) > 1:
            raise DiyError(f"container ID prefix {ref} is ambiguous: it matches {', '.join(matches)}; "
                           "give more characters or the name")
        if matches:
            return Names(instance, matches[0])
    if names is None:
        Names(instance, ref)  # raises the one-line bad-name error
    return names


def existing_container(instance, ref: str, code: int = 125) -> tuple[Names, dict]:
    """(names, record) of the container ref means (find_container); else one line with code."""
    names = find_container(instance, ref)
    record = load_record(names)
    if record is None:
        raise DiyError(f"no such container: {ref} (see invoke ps)", code)
    return names, record


def load_runtime(names: Names) -> dict | None:
    return read_json(names.runtime_state)


# --- journal -----------------------------------------------------------------

def journal(names: Names, entry: dict) -> None:
    """Append one line of history; best effort, correctness never depends on it."""
    if not os.path.isdir(names.container_dir):
        return
    line = json.dumps({"time": now_iso(), **entry}, sort_keys=True) + "\n"
    try:
        fd = os.open(names.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:
        pass


# --- locks -------------------------------------------------------------------

class Lock:
    """An flock on a file under the runtime root; the holder's pid is written in it."""

    def __init__(self, path: str, what: str, timeout: float):
        self.path, self.what, self.timeout = path, what, timeout
        self.fd: int | None = None

    def acquire(self) -> Lock:
        deadline = time.monotonic() + self.timeout
        while True:
            fd = self._open()
            if self._try_lock(fd, deadline):
                break
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def _open(self) -> int:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)

    def _try_lock(self, fd: int, deadline: float) -> bool:
        """Wait for the lock on fd; False when the file was removed meanwhile (retry)."""
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise DiyError(f"cannot lock {self.what}: another diy-docker command (pid {holder}) "
                               f"holds it; waited {self.timeout:g}s")
            time.sleep(0.02)
        # The holder before us may have removed the file (teardown): lock the new one.
        try:
            same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
        return same

    def remove(self) -> None:
        """Delete the lock file while holding it (teardown); waiters retry on a new file."""
        remove_file(self.path)

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def container_lock(names: Names) -> Lock:
    return Lock(names.lock, f"container {names.container}", names.instance.lock_timeout)


def instance_lock(instance) -> Lock:
    """One lock per instance for its shared state (the image store; later leases, nft table)."""
    from steps.names import instance_lock as path

    return Lock(path(instance), "the instance's shared state", instance.lock_timeout)
