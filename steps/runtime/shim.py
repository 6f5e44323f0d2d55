"""The detached monitor's small body while the container runs, and the json-file log writer.

A detached monitor launches the init with the whole tool, then execve()s this file under a bare
interpreter (`python -I -S shim.py ...`: no site, no package, only builtin modules - about 3 MiB
of anonymous memory instead of some 25) that keeps the monitor's pid, its children and the fds
it was handed. It relays the container's output into the log (rotating it), serves the attach
socket, forwards signals to the init, spawns the health checks' probes when they are due (each a
short-lived process of the whole tool, Prober), reaps it, then execve()s the whole tool again with the
exit code to record it, run the clean-up and the restart policy (steps/runtime/monitor.py,
resume). Everything comes in argv, KEY=VALUE words (see main), then `--` and the argv to exec
after the exit, to which CODE=N is appended; the fds named there are open and inheritable.

Imported as steps.runtime.shim, it is the log writer of every run (steps/runtime/logfile.py):
one writer for both paths. Only builtin modules here (posix, not os: os pulls in more).
"""
import posix
import time

_ESC = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_py(text: str) -> str:
    """json's encode_basestring_ascii, for an interpreter built without _json."""
    out = []
    for ch in text:
        o = ord(ch)
        if ch in _ESC:
            out.append(_ESC[ch])
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            o -= 0x10000
            out.append(f"\\u{0xD800 | (o >> 10):04x}\\u{0xDC00 | (o & 0x3FF):04x}")
    return '"' + "".join(out) + '"'


try:
    from _json import encode_basestring_ascii as escape  # json's own C encoder
except ImportError:
    escape = escape_py

# Docker's json-file default is unbounded, which is how a chatty container fills a disk: capped
# here by default, 30 MiB at most per container.
DEFAULT_OPTS = {"max-size": 10 * 1024 * 1024, "max-file": 3}
SPLIT = 16 * 1024  # Docker splits a longer line into 16 KiB records, each without its newline
CHUNK = 65536
DRAIN_SECONDS, DRAIN_BYTES = 2.0, 8 * 1024 * 1024  # what is read and written after the init ended, at most
FORWARDED = (2, 15, 1, 3, 10, 12)  # SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 (as monitor.py)
SIGKILL = 9


# --- the log (json-file) ---------------------------------------------------------

def stamp(ns: int) -> str:
    """RFC3339Nano in UTC with all nine digits, as `docker logs --timestamps` prints it; fixed
    width, so records compare as strings."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def encode(stream: str, data: bytes, when: str) -> list:
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
    return ['{"log":' + escape(line) + suffix for line in lines]


def _exists(path: str) -> bool:
    try:
        posix.stat(path)
        return True
    except OSError:
        return False


class LogWriter:
    """Appends records to the container's log, rotating at max-size: container.log becomes
    container.log.1 (the older ones move to .2, ...), keeping max-file files in all. Never
    blocks the container: a write error (a full disk) drops the records and counts them."""

    def __init__(self, path: str, opts: dict = None):
        opts = {**DEFAULT_OPTS, **(opts or {})}
        self.path, self.max_size, self.max_file = path, opts["max-size"], opts["max-file"]
        self.fd = None
        self.size = 0
        self.dropped = 0

    def open(self) -> None:
        self.fd = posix.open(self.path, posix.O_WRONLY | posix.O_CREAT | posix.O_APPEND | posix.O_CLOEXEC, 0o640)
        self.size = posix.fstat(self.fd).st_size

    def record(self, stream: str, data: bytes) -> None:
        records = encode(stream, data, stamp(time.time_ns()))
        if not records:
            return
        blob = "".join(records)
        if self.size + len(blob) - len(records[-1]) < self.max_size:  # no rotation in this chunk
            self.write(blob.encode(), len(records))
            return
        batch = []
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
                n = posix.write(self.fd, blob)
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
                posix.unlink(self.path)
            for i in range(self.max_file - 1, 0, -1):
                older = self.path if i == 1 else f"{self.path}.{i - 1}"
                if _exists(older):
                    posix.replace(older, f"{self.path}.{i}")
        except OSError:
            pass  # keep appending to whatever is there: losing history beats losing the container
        self.size = 0

    def close(self) -> None:
        if self.fd is not None:
            posix.close(self.fd)
            self.fd = None


# --- the relay (the foreground monitor's too: steps/runtime/terminal.py runs this one) ---------

class Relay:
    """Bytes from each source to its destination (None: recorded only, a detached container),
    the container's output into the log too, `attach` connections fed to their listener's
    destination, until the init ends; then what is left, within bounds."""

    def __init__(self, pairs, to_container: set, tee: dict | None = None, log=None, listeners: set | None = None):
        self.pairs = dict(pairs)  # source -> destination fd, or None: recorded only
        self.pending = {dst: b"" for dst in self.pairs.values() if dst is not None}
        self.to_container = to_container  # sources whose EOF closes their destination
        self.tee, self.log = tee or {}, log  # source -> "stdout"|"stderr": its chunks go to the log too
        self.listeners = listeners or set()  # sockets whose connections feed their destination
        self.clients = set()  # `attach` connections: what they send goes to their listener's destination
        for dst in self.pending:
            if dst > 2:  # never a caller's own fds: their file descriptions are shared with its shell
                posix.set_blocking(dst, False)

    def run(self, pidfd: int, prober=None) -> None:
        import select

        probes = list if prober is None else prober.fds  # () -> the running probe's pidfd, if any
        while True:
            readers = [s for s, d in self.pairs.items() if d is None or len(self.pending[d]) < CHUNK]
            writers = [d for d, data in self.pending.items() if data]
            try:
                r, w, _ = select.select(readers + [pidfd] + probes(), writers, [],
                                        None if prober is None else prober.wait())
            except InterruptedError:
                continue
            for dst in w:
                self.flush(dst)
            for src in r:
                if src in self.pairs or src in self.listeners:
                    self.pump(src)
            if pidfd in r:
                break
            if prober is not None:
                prober.tick(r)
        if prober is not None:  # before anything else: no probe may record a result once the init ended
            prober.stop()
        self.drain()

    def drain(self) -> None:
        """What it wrote before it ended, within bounds: a writer outside its pid namespace holding
        the pipe (or an attach client that stops reading) must not hold the exit record for ever."""
        import select

        deadline, budget = time.monotonic() + DRAIN_SECONDS, DRAIN_BYTES
        quiet = self.to_container | self.listeners | self.clients
        for src in [s for s in self.pairs if s not in quiet]:
            posix.set_blocking(src, False)
            while src in self.pairs and budget > 0 and time.monotonic() < deadline:
                if select.select([src], [], [], 0)[0]:
                    budget -= CHUNK
                    self.pump(src)
                else:
                    self.pairs.pop(src)
        for dst in list(self.pending):
            try:
                while self.pending[dst] and time.monotonic() < deadline:
                    if select.select([], [dst], [], max(0.0, deadline - time.monotonic()))[1]:
                        self.pending[dst] = self.pending[dst][posix.write(dst, self.pending[dst]):]
            except OSError:
                pass

    def pump(self, src: int) -> None:
        if src in self.listeners:
            return self.accept(src)
        try:
            data = posix.read(src, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: the pty's other side is closed
        dst = self.pairs[src]
        if not data:
            del self.pairs[src]
            if src in self.clients:  # one attach ended; the container's stdin stays open
                self.clients.discard(src)
                posix.close(src)
            elif src in self.to_container and dst not in self.pairs.values():
                self.flush(dst)
                if not self.pending.get(dst) and dst in self.pending:
                    del self.pending[dst]
                    if dst > 2:
                        posix.close(dst)
            return
        if src in self.tee and self.log is not None:
            self.log.record(self.tee[src], data)
        if dst is not None:
            self.pending[dst] += data
            self.flush(dst)

    def accept(self, listener: int) -> None:
        import _socket

        sock = _socket.socket(fileno=listener)
        try:
            fd, _ = sock._accept()
        except OSError:
            return
        finally:
            sock.detach()  # the fd stays ours
        posix.set_inheritable(fd, False)
        self.clients.add(fd)
        self.pairs[fd] = self.pairs[listener]

    def flush(self, dst: int) -> None:
        data = self.pending.get(dst)
        if not data:
            return
        try:
            sent = posix.write(dst, data)
        except BlockingIOError:
            return
        except OSError:
            sent = len(data)  # the reader is gone: drop what it would never read
        self.pending[dst] = data[sent:]


# --- health checks ----------------------------------------------------------------

class Prober:
    """The timing of the health checks (steps/runtime/health.py): every interval after the last
    one ended, a short-lived process of the whole tool (argv) runs one probe inside the container
    and records its result; here only spawning and reaping it, so the shim stays small. One at
    a time; the probe kills its own command past the timeout, and is itself killed when it
    overruns that by GRACE (a drain of 2 s included). Its output goes to the monitor's log."""

    GRACE = 5.0

    def __init__(self, argv: list, interval: float, timeout: float, log_path: str):
        self.argv, self.interval, self.limit, self.log_path = argv, interval, timeout + self.GRACE, log_path
        self.due = time.monotonic() + interval  # Docker's first probe: one interval after the start
        self.pid = self.pidfd = None
        self.started = 0.0

    def fds(self) -> list:
        return [] if self.pidfd is None else [self.pidfd]

    def wait(self) -> float:
        """Seconds until there is something to do: the next probe, or killing one that overran."""
        until = self.due if self.pid is None else self.started + self.limit
        return max(0.0, until - time.monotonic())

    def tick(self, readable) -> None:
        now = time.monotonic()
        if self.pidfd is not None and self.pidfd in readable:
            self.reap()
            self.due = time.monotonic() + self.interval
        elif self.pid is not None and now >= self.started + self.limit:
            self.kill()  # reaped when its pidfd turns readable
            self.started = now  # and not killed again at every turn
        if self.pid is None and now >= self.due:
            self.spawn()

    def spawn(self) -> None:
        actions = [(posix.POSIX_SPAWN_OPEN, 0, "/dev/null", posix.O_RDONLY, 0),
                   (posix.POSIX_SPAWN_OPEN, 1, self.log_path, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT, 0o640),
                   (posix.POSIX_SPAWN_DUP2, 1, 2)]
        try:
            # A session of its own: a Ctrl-C at the foreground monitor's terminal is the container's,
            # never the probe's. SIGPIPE back to its default: python ignores it.
            pid = posix.posix_spawn(self.argv[0], self.argv, posix.environ, file_actions=actions,
                                    setsid=True, setsigmask=(), setsigdef=(13,))
            self.pidfd = posix.pidfd_open(pid)
        except OSError as e:
            complain(f"diy-docker: cannot run the health check: {e}")
            self.due = time.monotonic() + self.interval
            return
        self.pid, self.started = pid, time.monotonic()

    def kill(self) -> None:
        try:
            posix.kill(self.pid, SIGKILL)
        except OSError:
            pass

    def reap(self) -> None:
        try:
            posix.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        posix.close(self.pidfd)
        self.pid = self.pidfd = None

    def stop(self) -> None:
        if self.pid is not None:
            self.kill()
            self.reap()


# --- the monitor's body ------------------------------------------------------------

def catches(pid: int, signo: int) -> bool:
    """Whether pid has a handler for signo (SigCgt in /proc/PID/status)."""
    try:
        fd = posix.open(f"/proc/{pid}/status", posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return False
    try:
        text = posix.read(fd, 1 << 16)
    finally:
        posix.close(fd)
    for line in text.split(b"\n"):
        if line.startswith(b"SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signo - 1) & 1)
    return False


def fds(text: str) -> list:
    return [int(x) for x in text.split(",") if x]


def complain(line: str) -> None:
    """A line on the monitor's stderr (its log file): a full disk must not end the monitor."""
    try:
        posix.write(2, (line + "\n").encode(errors="replace"))
    except OSError:
        pass


def main(argv: list) -> None:
    import _signal

    split = argv.index("--")
    opts = dict(word.split("=", 1) for word in argv[:split])
    back = argv[split + 1:]
    prober = None
    if "--probe" in back:  # the health check's process: the words after it
        at = back.index("--probe")
        interval, timeout = opts["health"].split(":")
        prober = Prober(back[at + 1:], float(interval), float(timeout), opts["probe_log"])
        back = back[:at]
    init = int(opts["init"])
    interrupts = 0

    def forward(signo, _frame):
        """PID 1 ignores signals it has no handler for: send what the default action would do."""
        nonlocal interrupts
        interrupts += signo == 2
        try:
            posix.kill(init, signo if interrupts < 2 and catches(init, signo) else SIGKILL)
        except OSError:
            pass

    for s in FORWARDED:
        _signal.signal(s, forward)
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, FORWARDED)  # blocked across the exec: none is lost

    log = LogWriter(opts["log"], {"max-size": int(opts["max_size"]), "max-file": int(opts["max_file"])})
    try:
        log.open()
    except OSError:
        pass
    tee = {}
    for word in opts["tee"].split(","):
        if word:
            fd, stream = word.split(":")
            tee[int(fd)] = stream
    pairs = {}
    for word in opts["pairs"].split(","):
        if word:
            src, dst = word.split(":")
            pairs[int(src)] = None if dst == "-" else int(dst)
    relayed = {fd for pair in pairs.items() for fd in pair if fd is not None}
    for fd in relayed:
        posix.set_inheritable(fd, False)  # never into the clean-up's process
    pidfd = posix.pidfd_open(init)
    try:
        Relay(pairs, set(fds(opts["to_container"])), tee, log, set(fds(opts["listeners"]))).run(pidfd, prober)
    finally:
        posix.close(pidfd)
    for fd in relayed:
        try:
            posix.close(fd)
        except OSError:
            pass
    if opts.get("socket"):
        try:
            posix.unlink(opts["socket"])
        except OSError:
            pass
    log.close()
    if log.dropped:
        complain(f"diy-docker: cannot write {log.path}: {log.dropped} log records dropped")
    try:  # waited for unreaped first: a signal forwarded until then reaches the init or its zombie,
        posix.waitid(posix.P_PID, init, posix.WEXITED | posix.WNOWAIT)  # never a reused pid
    except ChildProcessError:
        pass
    for s in FORWARDED:  # nothing to forward to now; the clean-up must not be cut short
        _signal.signal(s, _signal.SIG_IGN)
    try:
        _, status = posix.waitpid(init, 0)
        code = 128 + posix.WTERMSIG(status) if posix.WIFSIGNALED(status) else posix.WEXITSTATUS(status)
    except ChildProcessError:
        code = 125
    posix.execve(back[0], back + [f"code={code}"], posix.environ)


if __name__ == "__main__":
    import sys

    try:
        main(sys.argv[1:])
    except BaseException as e:  # noqa: BLE001
        complain(f"monitor: {type(e).__name__}: {e}")
        posix._exit(1)
