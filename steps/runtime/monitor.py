"""The monitor: forks the container's init, forwards signals, waits, cleans up.

In the foreground the invoking process is the monitor; `start` (detached)
forks a daemon monitor that outlives the command. Either way the monitor is
a child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER), so the init - forked by
a short-lived setup process to land in the new pid namespace as PID 1 - is
reparented to it and its exit status is ours to read.

A detached monitor does not stay this big while its container runs: once the init runs it
execve()s steps/runtime/shim.py under a bare interpreter (same pid, children and relay fds),
which relays, forwards signals and reaps the init, then execve()s the whole tool again
(resume_after_shim, below) to record the exit, run the restart policy and clean up.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from steps import EXIT_DIY_FAILED, StepFailed, faults, linux
from steps.facts import boot_id, catches_signal, process_start
from steps.state import load_record, load_runtime, now_iso, remove_file, update_record, write_json

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    return chunks and b"".join(chunks) or b""


def decode_status(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class Monitor:
    def __init__(self, ctx):
        self.ctx = ctx
        self.init_pid = 0
        self.init_start = 0
        self.interrupts = 0  # a second Ctrl-C kills
        self.previous: dict = {}
        self.oom_base = 0  # the cgroup's oom_kill count when this run began (it outlives restarts)
        self.began = time.monotonic()
        self.shim = False  # a detached monitor: wait() hands the running container to the shim
        self.backoff = None  # the restart policy's back-off (steps/runtime/restart.py), kept across execs
        self.health = None  # the health check that runs (steps/runtime/health.py), settled at each start

    def spawn(self) -> int:
        """Start the init; returns its pid once it has exec'd the command."""
        from steps.runtime.init import setup
        from steps.runtime.plan import build
        from steps.runtime.stdio import Stdio

        plan = build(self.ctx)
        self.stdio = Stdio(bool(self.ctx.spec.get("tty")), bool(self.ctx.spec.get("interactive")),
                           detached=not self.ctx.attach, log=container_log(self.ctx),
                           attach_socket=self.ctx.names.attach_socket)
        self.stdio.prepare()
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        child = os.fork()
        if child == 0:
            try:
                for fd in (err_r, pid_r, go_w):
                    os.close(fd)
                setup(plan, {**self.stdio.child_fds(), "err_w": err_w, "pid_w": pid_w, "go_r": go_r})
            finally:
                os._exit(EXIT_DIY_FAILED)  # never back into the caller's code
        for fd in (err_w, pid_w, go_r):
            os.close(fd)
        self.stdio.after_fork()
        pid_text = read_all(pid_r).decode().strip()
        os.waitpid(child, 0)
        if not pid_text:
            os.close(go_w)
            self.stdio.abandon()
            raise self.failure(read_all(err_r))
        self.init_pid = int(pid_text)
        self.init_start = process_start(self.init_pid) or 0
        self.stdio.receive_terminal()
        self.record_runtime()
        self.health = self.begin_health()
        faults.point("launch.apply.mid")
        self.install_handlers()  # from "go" on, a Ctrl-C is the container's, not the pipeline's
        try:
            os.write(go_w, b"g")
        except BrokenPipeError:
            pass  # the init failed before it waited for us: its error pipe says why
        finally:
            os.close(go_w)
        error = read_all(err_r)
        if error:
            self.restore_handlers()
            self.stdio.abandon()
            os.waitpid(self.init_pid, 0)
            remove_file(self.ctx.names.runtime_state)
            if self.health:
                from steps.runtime.health import clear

                clear(self.ctx.names)
            raise self.failure(error)
        update_record(self.ctx.names, started_at=now_iso(), finished_at=None, exit_code=None,
                      oom_killed=False, pid=self.init_pid)
        return self.init_pid

    def failure(self, raw: bytes) -> StepFailed:
        code, _, message = raw.decode(errors="replace").partition(" ")
        if not code.isdigit():
            return StepFailed("cannot start the container: its setup died without a word", EXIT_DIY_FAILED)
        return StepFailed(message, int(code))

    def begin_health(self) -> dict | None:
        """The health check of this run, recorded as "starting" before the command runs (so `ps`
        never shows a running container without it); none when neither the flags nor the image
        have one. A state that cannot be written leaves the container without checks."""
        from steps.runtime.health import begin

        try:
            return begin(self.ctx, self.init_pid, self.init_start)
        except OSError as e:
            print(f"monitor: no health checks for {self.ctx.names.container}: {e}", file=sys.stderr, flush=True)
            return None

    def prober(self):
        """The foreground's timing of the health checks: the shim's own (steps/runtime/shim.py)."""
        if not self.health:
            return None
        from steps.runtime.shim import Prober

        return Prober(self.probe_argv(), self.health["interval"], self.health["timeout"],
                      self.ctx.names.monitor_log)

    def probe_argv(self) -> list[str]:
        from steps.runtime.health import PROBE

        return [sys.executable, "-c", PROBE, package_root(), f"name={self.ctx.names.container}"]

    def record_runtime(self) -> None:
        me = os.getpid()
        write_json(self.ctx.names.runtime_state, {
            "init_pid": self.init_pid, "init_start": self.init_start,
            "monitor_pid": me, "monitor_start": process_start(me),
            "boot_id": boot_id(), "started_at": now_iso()})

    # --- waiting -------------------------------------------------------------

    def forward(self, signo: int, _frame=None) -> None:
        """Pass a signal on. PID 1 ignores signals it has no handler for, so where
        the init does not catch it, do what the default action would: end it."""
        if not self.init_pid:
            return
        if signo == signal.SIGINT:
            self.interrupts += 1
        if self.interrupts > 1 or not catches_signal(self.init_pid, signo):
            signo = signal.SIGKILL
        try:
            os.kill(self.init_pid, signo)
        except ProcessLookupError:
            pass

    def install_handlers(self) -> None:
        self.previous = {s: signal.signal(s, self.forward) for s in FORWARDED}

    def restore_handlers(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def wait(self) -> int:
        """Relay the container's terminal or pipes until the init ends; returns its exit
        code as a shell reports it. A detached monitor execs the shim instead, never returns."""
        if self.shim:
            self.exec_shim()
        try:
            self.stdio.relay(self.init_pid, self.prober())
            # waited for unreaped first: a signal forwarded until then reaches the init or its
            # zombie, never a process that took its pid after the reaping
            os.waitid(os.P_PID, self.init_pid, os.WEXITED | os.WNOWAIT)
            for s in FORWARDED:  # nothing to forward to now; the clean-up must not be cut short
                signal.signal(s, signal.SIG_IGN)
            _, status = os.waitpid(self.init_pid, 0)
            return decode_status(status)
        except ChildProcessError:
            return EXIT_DIY_FAILED
        finally:
            for s in FORWARDED:
                signal.signal(s, signal.SIG_IGN)

    def exec_shim(self) -> None:
        """Become the shim (steps/runtime/shim.py) for as long as the init runs: the relay's fds
        stay open at their numbers, everything else is close-on-exec; the forwarded signals are
        blocked across the exec (pending ones are forwarded once the shim has its handlers)."""
        stdio = self.stdio
        pairs = dict(stdio.pairs)
        relayed = {fd for pair in pairs.items() for fd in pair if fd is not None}
        for fd in relayed:
            os.set_inheritable(fd, True)
        log = stdio.log
        log.close()
        back = [sys.executable, "-c", RESUME, package_root(), f"name={self.ctx.names.container}",
                f"init={self.init_pid}:{self.init_start}", f"oom_base={self.oom_base}",
                f"began={self.began!r}", f"backoff={self.backoff.delay if self.backoff else 0.0!r}"]
        argv = [sys.executable, "-I", "-S", shim_program(self.ctx.instance.run_root),
                f"init={self.init_pid}", f"log={log.path}", f"max_size={log.max_size}",
                f"max_file={log.max_file}",
                "pairs=" + ",".join(f"{src}:{'-' if dst is None else dst}" for src, dst in pairs.items()),
                "tee=" + ",".join(f"{fd}:{stream}" for fd, stream in stdio.streams.items()),
                "listeners=" + ",".join(map(str, stdio.listeners)),
                "to_container=" + ",".join(map(str, stdio.to_container)),
                f"socket={stdio.socket_path if stdio.listeners else ''}"]
        if self.health:  # the shim spawns each probe (the argv after --probe) at its due time
            argv += [f"health={self.health['interval']!r}:{self.health['timeout']!r}",
                     f"probe_log={self.ctx.names.monitor_log}"]
            back += ["--probe", *self.probe_argv()]
        argv += ["--", *back]
        sys.stdout.flush()
        sys.stderr.flush()
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        try:
            os.execv(argv[0], argv)
        except OSError as e:  # no interpreter to become (it went?): relay here, as before
            print(f"monitor: cannot exec the shim: {e}", file=sys.stderr, flush=True)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
            self.shim = False

    # --- after the exit ------------------------------------------------------

    def mine(self) -> bool:
        """Whether the runtime state still names our init (or nothing): nobody restarted it."""
        rt = load_runtime(self.ctx.names)
        if rt is None:  # stopped meanwhile: ours if the record still names our init
            record = load_record(self.ctx.names) or {}
            return record.get("last", {}).get("pid") == self.init_pid
        return (rt.get("init_pid"), rt.get("init_start")) == (self.init_pid, self.init_start)

    def finish(self, code: int, reporter, remove: bool = False) -> int:
        """Record the exit and undo the runtime steps, under the container's lock."""
        from steps.cgroup import oom_kills
        from steps.runtime.restart import decide
        from steps.state import container_lock

        if self.ctx.attach and decide(self, code):
            # A foreground run with a restart policy returns at its first exit, as `docker run
            # --restart ...` without -d does (the CLI returns, the daemon restarts): a detached
            # monitor takes the container over, the back-off and the restarts are its own.
            self.restore_handlers()
            try:
                spawn_detached(self.ctx, resume=self, code=code)
                return code
            except StepFailed:
                pass  # no daemon to hand it to: clean up as after any exit
        oom = self.safe_oom_kills(oom_kills)
        lock = container_lock(self.ctx.names)
        lock.timeout = 3600.0  # a `stop --time N` may hold it for a while: wait, never give up on cleaning
        try:
            return self.clean_up(lock, code, oom, reporter, remove)
        finally:
            self.restore_handlers()

    def clean_up(self, lock, code: int, oom: bool, reporter, remove: bool) -> int:
        from steps.pipeline import Engine

        with lock:
            if load_record(self.ctx.names) is None:  # removed meanwhile (rm --force, teardown)
                lock.remove()
                return code
            if not self.mine():
                return code  # restarted meanwhile by another command: not ours to clean
            # The exit is a fact now: recorded before the clean-up, so `wait` and `ps` never see a
            # container whose init is gone (no runtime state) without its exit code.
            update_record(self.ctx.names, finished_at=now_iso(), exit_code=code, oom_killed=oom,
                          restarting=False)
            Engine(self.ctx, reporter, pipeline="exit").run("stop")
            if remove:
                Engine(self.ctx, reporter, pipeline="rm").run("remove")  # stop's undo ran just above
                lock.remove()
        return code

    def safe_oom_kills(self, counter) -> bool:
        try:
            return counter(self.ctx.names.cgroup_path) > self.oom_base
        except OSError:
            return False


def package_root() -> str:
    """The directory that holds the steps package (first on sys.path for the tool's own execs)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def shim_program(run_root: str) -> str:
    """The shim's file to run: its compiled form (compiling the source at every start leaves the
    shim about 1 MiB bigger), kept in RUN_ROOT (a tmpfs, per boot) and used only while its header
    names the current source and its code loads: a stale or corrupt one is compiled again, never
    run; the source when none can be had."""
    from steps.runtime import shim

    source = os.path.abspath(shim.__file__)
    try:
        st = os.stat(source)
    except OSError:
        return source
    ours = os.path.join(run_root, f"shim.{sys.implementation.cache_tag}.pyc")
    if current(ours, st):
        return ours
    try:
        import py_compile

        os.makedirs(run_root, exist_ok=True)
        py_compile.compile(source, cfile=ours, doraise=True)  # written atomically, as imports do
        if current(ours, st):
            return ours
    except (OSError, py_compile.PyCompileError):
        pass
    return source


def current(cached: str, st: os.stat_result) -> bool:
    """Whether cached is the compiled form of the source whose stat is st (a timestamp pyc) and
    its code loads (a file cut short or overwritten does not)."""
    import marshal
    from importlib.util import MAGIC_NUMBER

    try:
        with open(cached, "rb") as f:
            data = f.read(1 << 22)
    except OSError:
        return False
    head = MAGIC_NUMBER + b"\0\0\0\0" + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") \
        + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    if data[:16] != head:
        return False
    try:
        return type(marshal.loads(data[16:])).__name__ == "code"
    except (ValueError, EOFError, TypeError):
        return False


def container_log(ctx):
    """The writer of the container's log (json-file), opened now so that a start fails early."""
    from steps.runtime.logfile import LogWriter

    log = LogWriter(ctx.names.log, ctx.spec.get("log_opts"))
    try:
        log.open()
    except OSError:
        pass  # a full or broken disk: the records are dropped and counted, the container runs
    return log


def spawn_detached(ctx, resume: Monitor | None = None, code: int = 0) -> int:
    """Fork a daemon monitor (double fork, new session); returns the init's pid. With resume, the
    daemon takes over that monitor's container, whose init exited with code (a restart policy)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    linux.daemonize(lambda: daemon(ctx, w, resume, code), r, w)
    answer = read_all(r).decode(errors="replace")
    status, _, rest = answer.partition(" ")
    if status == "ok":
        return int(rest)
    code, _, message = rest.partition(" ")
    raise StepFailed(message or "the monitor died while starting the container",
                     int(code) if code.isdigit() else EXIT_DIY_FAILED)


def daemon(ctx, w: int, resume: Monitor | None = None, code: int = 0) -> None:
    """The detached monitor's life; never returns."""
    try:
        os.chdir("/")  # do not pin the caller's working directory for the container's life
        # The monitor's own words (a traceback, a dropped-records count) go to a file of its
        # own: the container's log holds the container's output only.
        log = os.open(ctx.names.monitor_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, w)
        os.closerange(w + 1, os.sysconf("SC_OPEN_MAX"))  # the caller's locks among them
        ctx.attach = False
        monitor = resume or Monitor(ctx)
        monitor.shim = True
        if resume:
            monitor.record_runtime()  # the runtime state names this monitor from now on
        pid = monitor.init_pid if resume else monitor.spawn()
        os.write(w, f"ok {pid}".encode())
        os.close(w)
    except BaseException as e:  # noqa: BLE001
        try:
            os.write(w, f"err {getattr(e, 'code', EXIT_DIY_FAILED)} {e}".encode(errors="replace"))
        finally:
            os._exit(1)
    after_exit(monitor, code if resume else monitor.wait())


def after_exit(monitor: Monitor, code: int) -> None:
    """The restart policy, then the clean-up; never returns. A relaunch hands the new run to
    the shim again (monitor.wait execs it)."""
    from steps.report import Reporter
    from steps.runtime.restart import supervise

    try:
        code = supervise(monitor, code)
        with open(os.devnull, "w") as quiet:  # the steps go to the journal
            monitor.finish(code, Reporter(stream=quiet, color=False), remove=monitor.ctx.spec.get("rm", False))
    except BaseException as e:  # noqa: BLE001
        print(f"monitor: {e}", file=sys.stderr, flush=True)
    os._exit(0)


# The whole tool again after the shim: the package's root first on sys.path (as the caller had it).
RESUME = ("import sys; sys.path.insert(0, sys.argv[1]); "
          "from steps.runtime.monitor import resume_after_shim as r; r(sys.argv[2:])")


def resume_after_shim(argv: list[str]) -> None:
    """The shim's exec back, after the init exited: KEY=VALUE words (name, init=PID:START,
    oom_base, began, backoff, code). The container's record is its spec, as for `start`."""
    from steps import config
    from steps.names import Names
    from steps.pipeline import Context
    from steps.runtime.restart import Backoff

    try:
        opts = dict(word.split("=", 1) for word in argv)
        instance = config.load()
        names = Names(instance, opts["name"])
        record = load_record(names)
        monitor = Monitor(Context(instance, names, record or {"name": opts["name"]}, attach=False))
        pid, _, start = opts["init"].partition(":")
        monitor.init_pid, monitor.init_start = int(pid), int(start)
        monitor.oom_base = int(opts["oom_base"])
        monitor.began = float(opts["began"])
        monitor.backoff = Backoff(float(opts["backoff"]))
        monitor.shim = True
        code = int(opts["code"])
    except BaseException as e:  # noqa: BLE001
        print(f"monitor: cannot resume after the shim: {e}", file=sys.stderr, flush=True)
        os._exit(1)
    after_exit(monitor, code)
