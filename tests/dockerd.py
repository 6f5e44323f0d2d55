"""A real Docker daemon (Debian's docker.io 20.10) inside a test's network namespace, for firewall-coexistence tests.

dockerd runs under `ip netns exec NETNS`, which also gives it a private mount namespace (slave of the host's):
its overlay and nsfs mounts never reach the host's mount table and go away with its last process. In that
namespace a small `sh -c` wrapper first mounts the cgroup hierarchies again (ip netns exec replaced /sys, and
/sys/fs/cgroup with it) and bind-mounts directories under ROOT/private over the places dockerd, containerd
and their shims write outside their flags (/run: /run/containerd/s shim sockets, /run/docker/plugins,
/run/xtables.lock, /run/mount/utab; /etc/docker; /opt: containerd's opt plugin makes /opt/containerd), then
execs dockerd; TMPDIR, HOME and DOCKER_CONFIG point under ROOT too. Nothing is downloaded: the image is
Debian's /bin/busybox, imported.

The test process holds dockerd's mount namespace open (so its inode, by which stop() finds containerd and the
shims, is never another test's) and so does a watchdog process, which does stop()'s work if the test process
dies without calling it (SIGKILL, a timeout); a normal interpreter exit runs stop() through atexit.
"""
from __future__ import annotations

import atexit
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time

from tests import host

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERD = shutil.which("dockerd")  # None when docker.io is not installed
DOCKER = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker")  # 20.10's own
BUSYBOX = "/bin/busybox"
HTTPD_BODY = "diyfw dockerd httpd ok\n"  # what run_httpd's container serves at /
PRIVATE_DIRS = ("/run", "/etc/docker", "/opt")  # hidden behind ROOT/private/... in dockerd's mount namespace
SOCKET_ROOM = 40  # the longest socket name dockerd and containerd make under exec-root ("containerd/...ttrpc")
SUN_PATH_MAX = 107  # a unix socket's path, without its NUL


def _cgroup_mounts() -> list[str]:
    """Shell lines that mount /sys/fs/cgroup again as the host has it (tmpfs, v1 hierarchies, cgroup2)."""
    lines = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, rest = line.split(" - ")
            root, target = fields.split(" ")[3:5]
            fstype, _, options = rest.split()
            if target != "/sys/fs/cgroup" and not target.startswith("/sys/fs/cgroup/"):
                continue
            if fstype not in ("tmpfs", "cgroup", "cgroup2"):
                continue
            if root != "/":
                raise AssertionError(f"{target} shows only {root} of its hierarchy; not supported")
            opts = ",".join(o for o in options.split(",") if o not in ("rw", "ro"))
            lines.append(f"mkdir -p {shlex.quote(target)}")
            lines.append(f"mount -t {fstype} {'-o ' + shlex.quote(opts) if opts else ''} dfh-{fstype} "
                         f"{shlex.quote(target)}")
    if os.path.isdir("/sys/fs/cgroup"):
        for name in sorted(os.listdir("/sys/fs/cgroup")):
            path = os.path.join("/sys/fs/cgroup", name)
            if os.path.islink(path):  # e.g. cpu -> cpu,cpuacct
                lines.append(f"ln -s {shlex.quote(os.readlink(path))} {shlex.quote(path)}")
    return lines


def _processes_in_mntns(mntns: str) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.readlink(f"/proc/{pid}/ns/mnt") == mntns:
                    pids.append(int(pid))
            except OSError:
                pass
    return pids


class Dockerd:
    """A dockerd of a test's own: in netns `netns` (a name under /run/netns the caller made and deletes),
    every file under `root`, its cgroups under `cgroup_parent`."""

    def __init__(self, netns: str, root: str, cgroup_parent: str):
        self.netns = netns
        self.root = os.path.abspath(root)
        if not cgroup_parent.strip("/") or ".." in cgroup_parent.split("/"):
            raise ValueError(f"cgroup_parent {cgroup_parent!r}: stop() removes it, so it must be a test's own")
        self.cgroup_parent = "/" + cgroup_parent.strip("/")  # from each hierarchy's root, not dockerd's own
        self.socket = os.path.join(self.root, "docker.sock")
        self.log = os.path.join(self.root, "dockerd.log")
        self.image: str | None = None
        self._proc: subprocess.Popen | None = None
        self._mntns: str | None = None  # "mnt:[inode]" of dockerd's private mount namespace, held open by:
        self._ns_fd: int | None = None
        self._watchdog: subprocess.Popen | None = None
        self._made_root = False
        self._started = False

    # -- start ---------------------------------------------------------------------------------------------

    def _script(self) -> str:
        r = self.root
        lines = ["set -e", f"readlink /proc/$$/ns/mnt > {shlex.quote(r + '/mntns')}", *_cgroup_mounts()]
        for d in PRIVATE_DIRS:
            if os.path.isdir(d) and not os.path.islink(d):
                lines.append(f"mount --bind {shlex.quote(r + '/private' + d)} {shlex.quote(d)}")
        args = [DOCKERD, "--data-root", f"{r}/data", "--exec-root", f"{r}/exec", "--pidfile", f"{r}/dockerd.pid",
                "-H", f"unix://{self.socket}", "--cgroup-parent", self.cgroup_parent,
                "--exec-opt", "native.cgroupdriver=cgroupfs", "--config-file", f"{r}/daemon.json"]
        lines.append("exec " + " ".join(shlex.quote(a) for a in args))
        return "\n".join(lines)

    def _env(self) -> dict[str, str]:
        tmp = os.path.join(self.root, "tmp")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "XDG_", "CONTAINERD_"))}
        return {**env, "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TMPDIR": tmp, "HOME": os.path.join(self.root, "home"),
                "DOCKER_CONFIG": os.path.join(self.root, "client")}

    def _check_paths(self) -> None:
        for d in PRIVATE_DIRS:
            if self.root == d or self.root.startswith(d.rstrip("/") + "/"):
                raise ValueError(f"root {self.root} is under {d}, which dockerd's namespace hides")
        if len(os.path.join(self.root, "exec")) + 1 + SOCKET_ROOM > SUN_PATH_MAX:
            raise ValueError(f"root {self.root} is too long for the unix sockets dockerd makes under it")

    def start(self, timeout: float = 60) -> None:
        """Start dockerd (with its own managed containerd) and wait until `docker version` answers."""
        if DOCKERD is None or DOCKER is None:
            raise AssertionError("docker.io (dockerd and the docker client) is not installed")
        if self._started:
            raise AssertionError("this Dockerd was started already")
        if not os.path.exists(f"/run/netns/{self.netns}"):
            raise AssertionError(f"no netns {self.netns} under /run/netns")
        self._check_paths()
        self._made_root = not os.path.isdir(self.root)
        self._started = True
        atexit.register(self.stop)
        os.makedirs(self.root, exist_ok=True)
        for sub in ("tmp", "home", "client", "data", "exec", *("private" + d for d in PRIVATE_DIRS)):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        with open(os.path.join(self.root, "daemon.json"), "w") as f:  # not the host's /etc/docker/daemon.json
            json.dump({"deprecated-key-path": os.path.join(self.root, "key.json")}, f)  # not /etc/docker/key.json
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(["ip", "netns", "exec", self.netns, "sh", "-c", self._script()],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          env=self._env(), start_new_session=True)
        deadline = time.monotonic() + timeout
        why = f"no answer within {timeout:g}s"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                why = f"dockerd exited with {self._proc.returncode}"
                break
            self._hold_mntns()
            try:
                if self.docker("version", check=False, timeout=10).returncode == 0 and self._ns_fd is not None:
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.1)
        tail = self._log_tail(30)
        self.stop()
        raise AssertionError(f"dockerd in netns {self.netns} did not start: {why}; {self.log}, last lines:\n{tail}")

    def _log_tail(self, n: int) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def _hold_mntns(self) -> None:
        """Once dockerd is in its private mount namespace, hold it open (its inode is then never reused for
        another test's namespace) and hand it to a watchdog that cleans up if this process dies."""
        if self._ns_fd is not None or self._proc is None or self._proc.poll() is not None:
            return
        try:  # dockerd is our unreaped child: its pid is not anyone else's
            fd = os.open(f"/proc/{self._proc.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        name = f"mnt:[{os.fstat(fd).st_ino}]"
        if name == os.readlink("/proc/self/ns/mnt"):  # still `ip`, before its unshare
            os.close(fd)
            return
        self._ns_fd, self._mntns = fd, name
        code = f"import sys; sys.path.insert(0, {REPO!r}); from tests.dockerd import _watch; _watch()"
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", code, self.root, self.cgroup_parent, str(int(self._made_root)), str(fd)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(fd,),
            start_new_session=True)

    # -- use -----------------------------------------------------------------------------------------------

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """The docker client against this daemon's socket."""
        proc = subprocess.run([DOCKER, "-H", f"unix://{self.socket}", *args], env=self._env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def import_busybox(self, ref: str = "diyfw/busybox:test") -> str:
        """A busybox image made from /bin/busybox (a rootfs tar with /bin/busybox and its applet links), imported.
        Returns ref."""
        applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:

            def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.size, info.linkname = kind, mode, len(data), link
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(data) if data else None)

            for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev"):
                add(d, tarfile.DIRTYPE, 0o755)
            add("tmp", tarfile.DIRTYPE, 0o1777)
            with open(BUSYBOX, "rb") as f:
                add("bin/busybox", tarfile.REGTYPE, 0o755, f.read())
            add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
            add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\n")
            for a in applets:
                if a != "bin/busybox":
                    add(a, tarfile.SYMTYPE, 0o777, link="/bin/busybox")
        path = os.path.join(self.root, "busybox-rootfs.tar")
        with open(path, "wb") as f:
            f.write(buf.getvalue())
        try:
            self.docker("import", "--change", 'CMD ["/bin/sh"]', path, ref, timeout=120)
        finally:
            os.unlink(path)
        self.image = ref
        return ref

    def run_httpd(self, name: str, port: int = 80) -> str:
        """docker run -d a busybox httpd serving one file with a known body; returns its address on docker0.
        The body is HTTPD_BODY, at http://ADDRESS:PORT/; returns once httpd listens."""
        if self.image is None:
            self.import_busybox()
        page = shlex.quote(HTTPD_BODY.rstrip("\n"))
        self.docker("run", "-d", "--name", name, self.image, "sh", "-c",
                    f"mkdir -p /www && echo {page} > /www/index.html && exec httpd -f -p {port} -h /www")
        deadline = time.monotonic() + 20
        while f":{port} " not in self.docker("exec", name, "netstat", "-ltn", check=False).stdout:
            if time.monotonic() > deadline:
                logs = self.docker("logs", name, check=False)
                raise AssertionError(f"httpd in {name} does not listen on {port}\n{logs.stdout}{logs.stderr}")
            time.sleep(0.1)
        return self.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout.strip()

    # -- stop ----------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Remove its containers, stop dockerd and containerd, kill anything left in their cgroups,
        remove the cgroups and every file under root. Safe to call twice and after a failed start."""
        if not self._started:
            return
        atexit.unregister(self.stop)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._hold_mntns()
        seen = set(self._leftovers())  # to wait for below, till init has reaped them too
        if proc is not None and proc.poll() is None:
            try:
                ids = self.docker("ps", "-aq", check=False, timeout=20).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False, timeout=60)
            except subprocess.TimeoutExpired:
                pass
        seen.update(self._leftovers())
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # dockerd stops its containerd
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._proc = None
        for _ in range(200):  # containerd, shims, runc, docker-proxy: all in dockerd's mount namespace
            pids = self._leftovers()
            if not pids:
                break
            seen.update(pids)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        for root in host.cgroup_roots():  # containers' processes, then the cgroups, in every hierarchy
            host.remove_cgroup_tree(os.path.join(root, self.cgroup_parent.lstrip("/")))
        deadline = time.monotonic() + 5  # the shims were reparented to init: gone once it has reaped them
        while any(os.path.exists(f"/proc/{pid}") for pid in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._ns_fd is not None:  # the namespace, its overlay and nsfs mounts go with the last reference
            os.close(self._ns_fd)
        if self._watchdog is not None:
            try:
                self._watchdog.communicate(b"done", timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._watchdog.kill()
                self._watchdog.wait()
        self._ns_fd = self._mntns = self._watchdog = self.image = None
        self._remove_files()
        self._started = False

    def _leftovers(self) -> list[int]:
        """The processes in dockerd's mount namespace. Known for sure while we hold it; else (a start that
        failed at once) from the inode the wrapper wrote, and only those naming our root."""
        if self._mntns is not None:
            return _processes_in_mntns(self._mntns)
        try:
            with open(os.path.join(self.root, "mntns")) as f:
                name = f.read().strip()
        except OSError:
            return []
        if not name.startswith("mnt:[") or name == os.readlink("/proc/self/ns/mnt"):
            return []
        out = []
        for pid in _processes_in_mntns(name):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if self.root.encode() + b"/" in f.read():
                        out.append(pid)
            except OSError:
                pass
        return out

    def _remove_files(self) -> None:
        if not os.path.isdir(self.root):
            return
        for attempt in range(50):  # a mount namespace is released a moment after its last process
            try:
                for name in os.listdir(self.root):
                    path = os.path.join(self.root, name)
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)
                if self._made_root:
                    os.rmdir(self.root)
                return
            except OSError:
                if attempt == 49:
                    raise
                time.sleep(0.1)


def _watch() -> None:
    """The watchdog: argv ROOT CGROUP_PARENT MADE_ROOT FD (FD: dockerd's mount namespace). Waits for "done" on
    stdin; when stdin closes without it (the test process died without stop()), it does stop()'s work."""
    root, cgroup_parent, made_root, fd = sys.argv[1:5]
    if sys.stdin.buffer.read() == b"done":
        return
    d = Dockerd("", root, cgroup_parent)
    d._started, d._made_root = True, made_root == "1"
    d._ns_fd, d._mntns = int(fd), f"mnt:[{os.fstat(int(fd)).st_ino}]"
    d.stop()
