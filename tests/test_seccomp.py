"""Seccomp profiles compiled to BPF (steps/runtime/seccomp.py) and loaded into real forked children.

Each kernel test forks; the child installs the filter with steps.linux.seccomp_load (as root it
holds CAP_SYS_ADMIN, so seccomp(2) needs no no_new_privs), tries syscalls with harmless
arguments and reports 0 or the errno through a pipe. A syscall the filter lets through fails
with the kernel's own error (ENOENT for a missing path, EINVAL for a bogus command), one it
stops fails with the profile's errno.

The default profile on Debian is Podman's (golang-github-containers-common): it allows keyctl,
mount and unshare and leaves those to capabilities; Docker's gates them on CAP_SYS_ADMIN. The
Docker-shaped test rebuilds that gating from the installed file.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pyseccomp
import pytest

from steps import BadInput, StepFailed, linux
from steps.runtime import profile, seccomp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKER_CAPS = frozenset(profile.defaults()["capabilities"])  # Docker's 14
NOWHERE = b"/nonexistent-diy-seccomp-probe"
_libc = ctypes.CDLL(None, use_errno=True)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loading a filter without no_new_privs "
                                                          "needs CAP_SYS_ADMIN, and the probes expect root's errors")


@pytest.fixture(autouse=True)
def no_residue(tmp_path):
    """Every file a test made lives under tmp_path and goes with it."""
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture(scope="module")
def default_path() -> str:
    try:
        return seccomp.default_profile_path()
    except StepFailed as e:
        pytest.skip(f"no default profile to test: {e}")


# --- the child that runs under a filter ---------------------------------------------------------

def number(name: str) -> int:
    """The native syscall number, resolved in the parent (the child runs under the filter)."""
    nr = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    assert nr >= 0, f"{name} is not a syscall on this arch"
    return nr


def raw(nr: int, *args: int) -> int:
    """syscall(2): 0 when it succeeded, else its errno."""
    result = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    return 0 if result >= 0 else ctypes.get_errno()


def libc_call(func, *args) -> int:
    return 0 if func(*args) >= 0 else ctypes.get_errno()


def oserror(action) -> int:
    try:
        action()
        return 0
    except OSError as e:
        return e.errno


def read_status() -> None:
    fd = os.open("/proc/self/status", os.O_RDONLY)
    try:
        assert b"Name:" in os.read(fd, 4096)
    finally:
        os.close(fd)


def write_null() -> None:
    fd = os.open("/dev/null", os.O_WRONLY)
    try:
        assert os.write(fd, b"x") == 1
    finally:
        os.close(fd)


def child_exit(run_in_child) -> int:
    """fork(2) and wait: the grandchild's exit code (it inherits the filter)."""
    pid = os.fork()
    if pid == 0:
        try:
            run_in_child()
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def capset_same() -> None:
    """capset(2) with the sets we hold: allowed by the profile, changes nothing."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":\t", 1) for line in f if line.startswith("Cap"))
    linux.capset(int(fields["CapEff"], 16), int(fields["CapPrm"], 16), int(fields["CapInh"], 16))


def run_filtered(program: bytes, probes: dict) -> tuple[dict | None, int]:
    """Fork; the child loads the filter, runs every probe (each returns 0 or an errno) and writes the
    results as JSON. Returns (the results or None if the child died, its wait status)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            linux.seccomp_load(program)
            results = {name: probe() for name, probe in probes.items()}
            os.write(w, json.dumps(results).encode())
        except BaseException as e:  # noqa: BLE001 - the parent shows it
            os.write(w, json.dumps({"child error": repr(e)}).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    results = json.loads(data) if data else None
    assert not (results and "child error" in results), results
    return results, status


def common_probes() -> dict:
    """What every container needs: all of it must work under the default profile."""
    getpid = number("getpid")
    return {"getpid": lambda: raw(getpid),
            "open+read": lambda: oserror(read_status),
            "write": lambda: oserror(write_null),
            "fork": lambda: 0 if child_exit(lambda: os._exit(7)) == 7 else -1,
            "execve": lambda: child_exit(lambda: os.execv("/bin/true", ["true"])),
            "capset": lambda: oserror(capset_same),
            "prctl": lambda: oserror(lambda: linux.prctl(linux.PR_SET_PDEATHSIG, 0))}


def privileged_probes() -> dict:
    """Harmless calls that show whether the filter let them through: the kernel's own error if it did."""
    add_key, keyctl, bpf = number("add_key"), number("keyctl"), number("bpf")
    return {"add_key": lambda: raw(add_key, 0, 0, 0, 0, 0),  # NULL type: EFAULT
            "keyctl": lambda: raw(keyctl, 9999),  # no such command: EOPNOTSUPP
            "bpf": lambda: raw(bpf, 9999, 0, 0),  # no such command: EINVAL
            "unshare": lambda: libc_call(_libc.unshare, linux.CLONE_NEWNS),  # the child's own mount ns
            "mount": lambda: libc_call(_libc.mount, b"none", NOWHERE, b"tmpfs", ctypes.c_ulong(0), None),
            "chroot": lambda: libc_call(_libc.chroot, NOWHERE)}


PASSED = {"add_key": errno.EFAULT, "keyctl": errno.EOPNOTSUPP, "bpf": errno.EINVAL, "unshare": 0,
          "mount": errno.ENOENT, "chroot": errno.ENOENT}


# --- the default profile ----------------------------------------------------------------------------

@needs_root
def test_default_profile_with_dockers_caps(default_path):
    prog = seccomp.compile_program(seccomp.load_profile(default_path), DOCKER_CAPS)
    results, status = run_filtered(prog, {**common_probes(), **privileged_probes()})
    assert os.waitstatus_to_exitcode(status) == 0
    assert {k: results[k] for k in common_probes()} == dict.fromkeys(common_probes(), 0)
    default_errno = json.load(open(default_path)).get("defaultErrnoRet") or errno.EPERM
    assert results["add_key"] == default_errno  # in no rule: the default action (Podman: ENOSYS)
    assert results["bpf"] == errno.EPERM  # only with CAP_SYS_ADMIN
    assert results["chroot"] == errno.ENOENT  # CAP_SYS_CHROOT is one of the 14: allowed


@needs_root
def test_default_profile_with_cap_sys_admin_allows_bpf_and_unshare(default_path):
    prog = seccomp.compile_program(seccomp.load_profile(default_path), DOCKER_CAPS | {"CAP_SYS_ADMIN"})
    results, _ = run_filtered(prog, {**common_probes(), **privileged_probes()})
    assert results["bpf"] == PASSED["bpf"] and results["unshare"] == 0 and results["mount"] == errno.ENOENT
    without_chroot = seccomp.compile_program(seccomp.load_profile(default_path), DOCKER_CAPS - {"CAP_SYS_CHROOT"})
    results, _ = run_filtered(without_chroot, privileged_probes())
    assert results["chroot"] == errno.EPERM


def docker_shaped(default_path: str) -> dict:
    """The installed profile with the tightening a default container gets (steps/profiles/default.json):
    Docker's answers where Podman's rootless default differs."""
    return seccomp.tighten(seccomp.load_profile(default_path), profile.defaults()["seccomp_default_tightening"])


def namespace_probes() -> dict:
    """clone with a namespace flag (a user namespace needs no capability, so only the filter stops it),
    and clone3, whose flags a filter cannot read."""
    clone, clone3 = number("clone"), number("clone3")
    newuser = 0x10000000  # CLONE_NEWUSER; the child exits at once where the call succeeds

    def clone_newuser() -> int:
        pid = _libc.syscall(ctypes.c_long(clone), ctypes.c_long(newuser | signal.SIGCHLD), *[ctypes.c_long(0)] * 4)
        if pid == 0:
            os._exit(0)
        if pid < 0:
            return ctypes.get_errno()
        os.waitpid(pid, 0)
        return 0

    return {"clone(CLONE_NEWUSER)": clone_newuser, "clone3": lambda: raw(clone3, 0, 0)}


@needs_root
def test_docker_shaped_profile_gates_on_cap_sys_admin(default_path):
    doc = docker_shaped(default_path)
    probes = {**common_probes(), **privileged_probes(), **namespace_probes()}
    results, _ = run_filtered(seccomp.compile_program(doc, DOCKER_CAPS), probes)
    assert {k: results[k] for k in common_probes()} == dict.fromkeys(common_probes(), 0)
    for name in ("add_key", "keyctl", "unshare", "mount", "bpf", "clone(CLONE_NEWUSER)"):
        assert results[name] == errno.EPERM, name
    assert results["clone3"] == errno.ENOSYS  # libc falls back to clone, which the filter can read
    results, _ = run_filtered(seccomp.compile_program(doc, DOCKER_CAPS | {"CAP_SYS_ADMIN"}), probes)
    assert results["unshare"] == 0 and results["mount"] == errno.ENOENT and results["clone(CLONE_NEWUSER)"] == 0
    assert results["keyctl"] == errno.EPERM  # in no rule at all


def test_tightening_keeps_conditional_rules_and_is_cached_apart(default_path, tmp_path):
    doc = docker_shaped(default_path)
    assert doc["defaultErrnoRet"] == errno.EPERM
    unconditional = {n for r in doc["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r["includes"]["caps"]
                     and not r["args"] for n in r["names"]}
    assert not unconditional & {"keyctl", "mount", "unshare", "setns", "clone", "clone3", "pivot_root"}
    tightening = profile.defaults()["seccomp_default_tightening"]
    plain = seccomp.program(default_path, DOCKER_CAPS, str(tmp_path))
    tight = seccomp.program(default_path, DOCKER_CAPS, str(tmp_path), tightening)
    assert plain != tight and len(os.listdir(tmp_path)) == 2


def test_default_profile_path_names_the_fix(monkeypatch, tmp_path):
    missing = str(tmp_path / "seccomp.json")
    monkeypatch.setattr(seccomp, "defaults", lambda: {"seccomp_profiles": [missing]})
    with pytest.raises(StepFailed) as e:
        seccomp.default_profile_path()
    message = str(e.value)
    assert "\n" not in message and missing in message and "is missing" in message
    assert "golang-github-containers-common" in message and "seccomp=unconfined" in message


# --- a profile as written ---------------------------------------------------------------------------

CUSTOM = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOMSG},
    {"name": "getuid", "action": "SCMP_ACT_ERRNO"},  # old style; no errnoRet: EPERM
    {"names": ["umask"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,  # mask & 0o77 == 0o77
     "args": [{"index": 0, "value": 0o77, "valueTwo": 0o77, "op": "SCMP_CMP_MASKED_EQ"}]},
    {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EAFNOSUPPORT,  # AF_NETLINK and SOCK_RAW
     "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 3, "op": "SCMP_CMP_EQ"}]},
    {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPROTO,  # one argument twice: ORed
     "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
    {"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_KILL"},  # unknown to libseccomp: skipped
]}


@needs_root
def test_custom_profile_behaves_as_written():
    nr = {n: number(n) for n in ("getppid", "getuid", "umask", "socket", "getpgid", "getpid")}
    probes = {"getppid": lambda: raw(nr["getppid"]), "getuid": lambda: raw(nr["getuid"]),
              "umask 077": lambda: raw(nr["umask"], 0o077), "umask 022": lambda: raw(nr["umask"], 0o022),
              "netlink raw": lambda: raw(nr["socket"], 16, 3, 0), "netlink dgram": lambda: raw(nr["socket"], 16, 2, 0),
              "getpgid 1": lambda: raw(nr["getpgid"], 1), "getpgid 2": lambda: raw(nr["getpgid"], 2),
              "getpgid 0": lambda: raw(nr["getpgid"], 0), "getpid": lambda: raw(nr["getpid"])}
    results, _ = run_filtered(seccomp.compile_program(CUSTOM, frozenset()), probes)
    assert results == {"getppid": errno.ENOMSG, "getuid": errno.EPERM, "umask 077": errno.EACCES, "umask 022": 0,
                       "netlink raw": errno.EAFNOSUPPORT, "netlink dgram": 0, "getpgid 1": errno.EPROTO,
                       "getpgid 2": errno.EPROTO, "getpgid 0": 0, "getpid": 0}


@needs_root
@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP"])
def test_killing_actions_end_the_child_with_sigsys(action):
    doc = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getppid"], "action": action}]}
    getppid = number("getppid")
    results, status = run_filtered(seccomp.compile_program(doc, frozenset()), {"getppid": lambda: raw(getppid)})
    assert results is None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def rule(**extra) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", **extra}]}


def test_rules_apply_by_caps_arch_and_kernel():
    """A rule left out compiles to the same program as no rule at all (the selection is Docker's)."""
    arch = seccomp.host()[1]
    other = "s390x" if arch != "s390x" else "amd64"
    none = seccomp.compile_program({"defaultAction": "SCMP_ACT_ALLOW"}, frozenset())
    both = frozenset({"CAP_SYS_ADMIN", "CAP_NET_ADMIN"})
    cases = [({"includes": {"arches": [other]}}, False), ({"includes": {"arches": [arch]}}, True),
             ({"excludes": {"arches": [arch]}}, False),
             ({"includes": {"minKernel": "999.0"}}, False), ({"includes": {"minKernel": "2.6"}}, True),
             ({"excludes": {"minKernel": "2.6"}}, False), ({"excludes": {"minKernel": "999.1.2"}}, True),
             ({"includes": {"caps": sorted(both)}}, True),
             ({"includes": {"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}}, False),  # every one is needed
             ({"excludes": {"caps": ["CAP_BPF", "CAP_NET_ADMIN"]}}, False),  # any one excludes
             ({"excludes": {"caps": ["CAP_BPF"]}}, True)]
    for extra, applied in cases:
        assert (seccomp.compile_program(rule(**extra), both) != none) == applied, extra


def test_caps_with_or_without_prefix_and_the_arch_map(default_path):
    doc = seccomp.load_profile(default_path)
    assert seccomp.compile_program(doc, DOCKER_CAPS) == seccomp.compile_program(doc, {c[4:] for c in DOCKER_CAPS})
    native_only = seccomp.compile_program({**doc, "archMap": []}, DOCKER_CAPS)
    assert len(native_only) < len(seccomp.compile_program(doc, DOCKER_CAPS))  # x86_64 adds x86 and x32
    old_style = {**doc, "archMap": None, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]}
    if seccomp.host()[0] == "SCMP_ARCH_X86_64":
        assert seccomp.compile_program(old_style, DOCKER_CAPS) == seccomp.compile_program(doc, DOCKER_CAPS)


def test_load_profile_normalises_idempotently(default_path):
    doc = seccomp.load_profile(default_path)
    assert seccomp.validate(doc) == doc
    assert all(set(r) == {"names", "action", "errnoRet", "args", "includes", "excludes"} for r in doc["syscalls"])


# --- malformed profiles -------------------------------------------------------------------------------

def profile_with(**rule_fields) -> bytes:
    return json.dumps({"defaultAction": "SCMP_ACT_ERRNO",
                       "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                                    {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", **rule_fields}]}).encode()


def top(**fields) -> bytes:
    return json.dumps({"defaultAction": "SCMP_ACT_ERRNO", **fields}).encode()


ARG = {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}


@pytest.mark.parametrize("content,words", [
    (b"", ["the file is empty"]),
    (b"  \n", ["the file is empty"]),
    (b"{not json", ["not JSON", "line 1 column 2"]),
    (b"\xff\xfe{}", ["not UTF-8"]),
    (b"[]", ["the top level is an array", "must be a JSON object"]),
    (b"{}", ["defaultAction is missing; it must be one of SCMP_ACT_ALLOW"]),
    (b'{"defaultAction": 5}', ["defaultAction is a number; it must be one of SCMP_ACT_ALLOW"]),
    (b'{"defaultAction": "ALLOW"}', ["defaultAction 'ALLOW' is not one of SCMP_ACT_ALLOW, SCMP_ACT_ERRNO"]),
    (b'{"defaultAction": "SCMP_ACT_NOTIFY"}', ["SCMP_ACT_NOTIFY needs a user-space supervisor"]),
    (top(syscall=[]), ["unknown key 'syscall'", "known keys are"]),
    (top(syscalls={}), ["syscalls is an object; it must be an array"]),
    (top(syscalls=["read"]), ["syscalls[0] is a string; it must be a JSON object"]),
    (top(defaultErrnoRet="EPERM"), ["defaultErrnoRet is a string; it must be an integer"]),
    (top(defaultErrnoRet=70000), ["defaultErrnoRet 70000 is out of range; an errno is 0..4095"]),
    (top(archMap=[{"architecture": "x86_64"}]), ["archMap[0].architecture 'x86_64' is not an architecture"]),
    (top(architectures=[None]), ["architectures[0] is missing; it must be an architecture"]),
    (top(archMap=[{"architecture": "SCMP_ARCH_X86_64"}], architectures=["SCMP_ARCH_X86"]), ["use one"]),
    (top(flags=["SECCOMP_FILTER_FLAG_LOG"]), ["'flags' are not supported"]),
    (top(listenerPath="/run/x.sock"), ["'listenerPath'", "not supported"]),
    (profile_with(action="ALLOW"), ["syscalls[1].action 'ALLOW' is not one of SCMP_ACT_ALLOW, SCMP_ACT_ERRNO"]),
    (profile_with(action="SCMP_ACT_NOTIFY"), ["syscalls[1].action SCMP_ACT_NOTIFY"]),
    (profile_with(errnoRet=1), ["syscalls[1].errnoRet is given with SCMP_ACT_ALLOW"]),
    (profile_with(names="getpid"), ["syscalls[1].names is a string; it must be an array"]),
    (profile_with(names=[""]), ["syscalls[1].names[0] is a string; it must be a non-empty string"]),
    (profile_with(name="getpid"), ["both 'name' and 'names'"]),
    (profile_with(args=[{**ARG, "op": "SCMP_CMP_XX"}]), ["syscalls[1].args[0].op 'SCMP_CMP_XX' is not one of"]),
    (profile_with(args=[{**ARG, "index": 7}]), ["args[0].index 7 is out of range; an argument index is 0..5"]),
    (profile_with(args=[{**ARG, "index": "0"}]), ["args[0].index is a string; it must be an integer"]),
    (profile_with(args=[{**ARG, "value": -1}]), ["args[0].value -1 is out of range"]),
    (profile_with(args=[{**ARG, "value": 2**64}]), ["args[0].value 18446744073709551616 is out of range"]),
    (profile_with(args=[{**ARG, "value": 1.5}]), ["args[0].value is a number; it must be an integer"]),
    (profile_with(args=[{"index": 0}]), ["args[0] needs 'index' and 'op'"]),
    (profile_with(args=[ARG] * 7), ["7 comparisons; a syscall has six arguments"]),
    (profile_with(includes={"caps": "CAP_SYS_ADMIN"}), ["includes.caps is a string; it must be an array"]),
    (profile_with(includes={"minKernel": "four"}), ["includes.minKernel 'four' is not a kernel version"]),
    (profile_with(excludes={"kernel": "4.8"}), ["excludes has the unknown key 'kernel'"]),
])
def test_malformed_profiles_are_refused_in_one_line(tmp_path, content, words):
    path = tmp_path / "profile.json"
    path.write_bytes(content)
    with pytest.raises(BadInput) as e:
        seccomp.load_profile(str(path))
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"bad seccomp profile {path}: "), message
    for word in words:
        assert word in message, message


def test_huge_missing_and_odd_files_are_refused(tmp_path):
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:
        f.write(b'{"defaultAction": "SCMP_ACT_ALLOW", "comment": "' + b"x" * (4 << 20) + b'"}')
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # no writer: opening it must not block
    cases = [(huge, "larger than 4 MiB"), (tmp_path / "missing.json", "cannot read it: No such file"),
             (tmp_path, "not a regular file"), (fifo, "not a regular file")]
    for path, words in cases:
        with pytest.raises(BadInput) as e:
            seccomp.load_profile(str(path))
        assert "\n" not in str(e.value) and words in str(e.value), str(e.value)


def test_validate_names_memory_profiles():
    with pytest.raises(BadInput, match=r"^bad seccomp profile \(in memory\): syscalls\[0\]\.action"):
        seccomp.compile_program({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": 1}]},
                                frozenset())


# --- the cache ----------------------------------------------------------------------------------------

@pytest.fixture
def counted(monkeypatch) -> list:
    """Record each compile_program call (the real one still runs)."""
    calls = []
    real = seccomp.compile_program

    def compile_and_count(doc, caps):
        calls.append(caps)
        return real(doc, caps)

    monkeypatch.setattr(seccomp, "compile_program", compile_and_count)
    return calls


def test_program_compiles_once_then_reads_the_cache(default_path, tmp_path, counted):
    cache = tmp_path / "cache"
    first = seccomp.program(default_path, DOCKER_CAPS, str(cache))
    files = os.listdir(cache)
    assert len(counted) == 1 and len(files) == 1 and files[0].endswith(".bpf")
    entry = cache / files[0]
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700 and stat.S_IMODE(os.stat(entry).st_mode) == 0o600
    mtime = os.stat(entry).st_mtime_ns
    assert seccomp.program(default_path, DOCKER_CAPS, str(cache)) == first
    assert len(counted) == 1 and os.stat(entry).st_mtime_ns == mtime
    assert first == seccomp.compile_program(seccomp.load_profile(default_path), DOCKER_CAPS)
    seccomp.program(default_path, DOCKER_CAPS | {"CAP_SYS_ADMIN"}, str(cache))  # other caps: another entry
    assert len(counted) == 3 and len(os.listdir(cache)) == 2  # (the comparison above counted too)


@pytest.mark.parametrize("corrupt", [b"\x00" * 5, b"", b"\x06\x00\x00\x00\x00\x00\xff\x7f" + b"\x20" * 8],
                         ids=["odd length", "empty", "not ending in a return"])
def test_a_corrupt_cache_entry_is_compiled_again(default_path, tmp_path, counted, corrupt):
    cache = tmp_path / "cache"
    good = seccomp.program(default_path, DOCKER_CAPS, str(cache))
    entry = cache / os.listdir(cache)[0]
    entry.write_bytes(corrupt)
    assert seccomp.program(default_path, DOCKER_CAPS, str(cache)) == good
    assert len(counted) == 2 and entry.read_bytes() == good
    assert os.listdir(cache) == [entry.name]  # no temporary file left


def test_a_changed_profile_is_compiled_again(tmp_path, counted):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(rule(errnoRet=5)))
    first = seccomp.program(str(path), frozenset(), str(tmp_path / "cache"))
    path.write_text(json.dumps(rule(errnoRet=6)))
    assert seccomp.program(str(path), frozenset(), str(tmp_path / "cache")) != first and len(counted) == 2


def test_a_cache_hit_does_not_import_pyseccomp(default_path, tmp_path):
    cache = str(tmp_path / "cache")
    seccomp.program(default_path, DOCKER_CAPS, cache)
    code = ("import sys; from steps.runtime import seccomp; "
            f"p = seccomp.program({default_path!r}, frozenset({sorted(DOCKER_CAPS)!r}), {cache!r}); "
            "print(len(p), 'pyseccomp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": REPO}).stdout.split()
    assert out == [str(len(seccomp.program(default_path, DOCKER_CAPS, cache))), "False"]


def test_cache_in_an_unwritable_place_fails_in_one_line(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(rule()))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StepFailed) as e:
        seccomp.program(str(path), frozenset(), str(blocker / "cache"))
    assert "\n" not in str(e.value) and "cannot write the seccomp cache" in str(e.value)


def test_compile_and_cache_hit_times(default_path, tmp_path):
    """The figures for the README: a first start compiles, every later one reads a few KiB."""
    cache = str(tmp_path / "cache")
    t0 = time.perf_counter()
    prog = seccomp.program(default_path, DOCKER_CAPS, cache)
    t1 = time.perf_counter()
    hits = []
    for _ in range(20):
        start = time.perf_counter()
        seccomp.program(default_path, DOCKER_CAPS, cache)
        hits.append(time.perf_counter() - start)
    hit = sorted(hits)[len(hits) // 2]
    print(f"\nseccomp: default profile -> {len(prog) // 8} instructions; compile {1000 * (t1 - t0):.1f} ms, "
          f"cache hit {1000 * hit:.3f} ms (median of 20)")
    assert hit < t1 - t0
