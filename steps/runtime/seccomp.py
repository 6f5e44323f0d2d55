"""Seccomp: Docker-format JSON profiles compiled to classic BPF, cached per profile and capability set.

seccomp(2): a filter is a classic-BPF program the kernel runs on every system call of the
thread (and its descendants: filters are inherited over fork and execve, and can never be
removed). The program sees struct seccomp_data (the syscall number, the audit arch and six
arguments) and returns an action: allow, fail with an errno, kill, trap, trace or log.

The profile format is Docker's (moby profiles/seccomp), as Podman's default profile in
/usr/share/containers/seccomp.json uses it: a default action, an arch map, and rules that
apply only when the container holds (includes.caps) or lacks (excludes.caps) capabilities,
runs on some arches, or on a new enough kernel. libseccomp (through pyseccomp) turns the
rules into BPF; the result is cached, so a container start loads bytes and compiles nothing.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import sys

from steps import BadInput, StepFailed
from steps.profiles import defaults
from steps.runtime.seccomp_profile import (  # noqa: F401 - load_profile, validate, tighten: the public face
    ARCHES,
    KERNEL_VERSION,
    OPS,
    load_profile,
    parse_profile,
    read_profile,
    tighten,
    validate,
)

CACHE_FORMAT = b"diy-docker seccomp cache 1"  # bump when compile_program emits something different
BPF_MAXINSNS = 4096  # include/uapi/linux/bpf_common.h: the kernel refuses longer classic programs
BPF_RET = 0x06  # the instruction class that ends a program; the kernel requires it last
SCMP_ERROR = -1  # __NR_SCMP_ERROR: libseccomp does not know the syscall name
MISSING_PROFILE_HINT = ("install golang-github-containers-common, or run with --security-opt seccomp=unconfined "
                        "(no filter)")

HOSTS = {"x86_64": ("SCMP_ARCH_X86_64", "amd64"), "i686": ("SCMP_ARCH_X86", "x86"), "i386": ("SCMP_ARCH_X86", "x86"),
         "aarch64": ("SCMP_ARCH_AARCH64", "arm64"), "armv7l": ("SCMP_ARCH_ARM", "arm"),
         "armv8l": ("SCMP_ARCH_ARM", "arm"), "ppc64le": ("SCMP_ARCH_PPC64LE", "ppc64le"),
         "ppc64": ("SCMP_ARCH_PPC64", "ppc64"), "s390x": ("SCMP_ARCH_S390X", "s390x"),
         "riscv64": ("SCMP_ARCH_RISCV64", "riscv64"), "mips64": ("SCMP_ARCH_MIPSEL64", "mipsel64"),
         "loongarch64": ("SCMP_ARCH_LOONGARCH64", "loong64")}



# --- the default profile ------------------------------------------------------------------

def default_profile_path() -> str:
    """The first existing file of default.json's "seccomp_profiles" (the distribution's default profile)."""
    candidates = list(defaults()["seccomp_profiles"])
    for path in candidates:
        if os.path.isfile(path):
            return path
    missing = ", ".join(candidates) + (" is" if len(candidates) == 1 else " are")
    raise StepFailed(f"no default seccomp profile: {missing} missing; {MISSING_PROFILE_HINT}")


# --- compiling ---------------------------------------------------------------------------------

def compile_program(profile: dict, caps: frozenset[str]) -> bytes:
    """The profile as a classic-BPF program (struct sock_filter[]) for this host and the container's
    final capability set. BadInput if the profile is malformed, StepFailed if libseccomp refuses."""
    import pyseccomp

    doc = validate(profile)
    caps = cap_names(caps)
    native, host_arch = host()
    kernel = _kernel_version(os.uname().release)
    default = _action(pyseccomp, doc["defaultAction"], doc["defaultErrnoRet"])
    filt = pyseccomp.SyscallFilter(default)
    # A syscall from an arch not in the filter (an x86 binary on x86_64 when the map omits it)
    # is killed, libseccomp's default. NNP stays off: libseccomp would only set it in
    # seccomp_load, and the runtime decides no_new_privs itself (prctl(2) PR_SET_NO_NEW_PRIVS).
    filt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL)
    filt.set_attr(pyseccomp.Attr.CTL_NNP, 0)
    for arch in _arches(doc, native):
        if arch != native:
            filt.add_arch(_arch_value(pyseccomp, arch))
    numbers: dict[str, int] = {}
    for i, rule in enumerate(doc["syscalls"]):
        if _applies(rule, caps, host_arch, kernel):
            _add_rule(pyseccomp, filt, rule, f"syscalls[{i}]", default, numbers)
    return _export(filt)


def _action(sc, name: str, errno_ret: int | None) -> int:
    """The action's 32-bit SECCOMP_RET_* value; an ERRNO or TRACE without errnoRet carries EPERM (runc's choice)."""
    data = errno.EPERM if errno_ret is None else errno_ret
    # SCMP_ACT_KILL is libseccomp's older name of KILL_THREAD (SECCOMP_RET_KILL_THREAD, seccomp(2)).
    return {"SCMP_ACT_ALLOW": sc.ALLOW, "SCMP_ACT_ERRNO": sc.ERRNO(data), "SCMP_ACT_KILL": sc.KILL_THREAD,
            "SCMP_ACT_KILL_THREAD": sc.KILL_THREAD, "SCMP_ACT_KILL_PROCESS": sc.KILL_PROCESS, "SCMP_ACT_TRAP": sc.TRAP,
            "SCMP_ACT_TRACE": sc.TRACE(data), "SCMP_ACT_LOG": sc.LOG}[name]


def _arches(doc: dict, native: str) -> list[str]:
    """archMap: the host's entry and its sub-architectures (x86_64 adds x86 and x32: the kernel runs their
    binaries too, with other syscall numbers). Old style: every listed arch. The native one always."""
    if doc["architectures"]:
        return [native, *doc["architectures"]]
    for entry in doc["archMap"]:
        if entry["architecture"] == native:
            return [native, *entry["subArchitectures"]]
    return [native]


def _arch_value(sc, name: str) -> int:
    value = getattr(sc.Arch, ARCHES[name], None)
    if value is None:
        raise BadInput(f"bad seccomp profile: this libseccomp binding does not know {name}; remove it from the "
                       "profile's arch map for this host")
    return value


def _applies(rule: dict, caps: frozenset[str], arch: str, kernel: tuple[int, int, int]) -> bool:
    """Docker's selection of a (normalised) rule: excludes first (any cap held, the arch, kernel new enough),
    then includes (every cap held, the arch, kernel new enough)."""
    excludes, includes = rule["excludes"], rule["includes"]
    if arch in excludes["arches"] or any(c in caps for c in excludes["caps"]):
        return False
    if excludes["minKernel"] and kernel >= _kernel_version(excludes["minKernel"]):
        return False
    if includes["arches"] and arch not in includes["arches"]:
        return False
    if not all(c in caps for c in includes["caps"]):
        return False
    return not (includes["minKernel"] and kernel < _kernel_version(includes["minKernel"]))


def _add_rule(sc, filt, rule: dict, what: str, default: int, numbers: dict[str, int]) -> None:
    action = _action(sc, rule["action"], rule["errnoRet"])
    if action == default:
        return  # the default already does it; libseccomp refuses such a rule (EACCES)
    for conditions in _condition_sets(sc, rule["args"]):
        for name in rule["names"]:
            if name not in numbers:
                numbers[name] = sc.resolve_syscall(sc.Arch.NATIVE, name)
            if numbers[name] == SCMP_ERROR:
                continue  # a syscall libseccomp does not know: skipped, as Docker does
            try:
                filt.add_rule(action, numbers[name], *conditions)
            except OSError as e:
                raise StepFailed(f"seccomp profile {what}: libseccomp refused the rule for {name}: {e.strerror}; "
                                 "fix or remove that rule")


def _condition_sets(sc, args: list[dict]) -> list[list]:
    """The comparisons of one rule, ANDed. libseccomp refuses two comparisons of the same argument in
    one rule (EINVAL); Docker's runtimes then add one rule per comparison (ORed), and so do we."""
    conditions = [sc.Arg(a["index"], getattr(sc, OPS[a["op"]]), a["value"], a["valueTwo"]) for a in args]
    indexes = [a["index"] for a in args]
    if len(set(indexes)) < len(indexes):
        return [[c] for c in conditions]
    return [conditions]


def _export(filt) -> bytes:
    """libseccomp writes the program to an fd: a memfd keeps it off every filesystem."""
    fd = os.memfd_create("diy-seccomp", os.MFD_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        filt.export_bpf(f)
        f.seek(0)
        prog = f.read()
    if not _is_program(prog):
        raise StepFailed(f"seccomp: libseccomp produced a program of {len(prog)} bytes, not 1..{BPF_MAXINSNS} "
                         "instructions ending in a return; the profile has too many rules for one filter")
    return prog


def _is_program(prog: bytes) -> bool:
    """A loadable classic-BPF program: 1..BPF_MAXINSNS 8-byte instructions, the last a return (the kernel's
    bpf_check_classic refuses anything else)."""
    if not prog or len(prog) % 8 or len(prog) > 8 * BPF_MAXINSNS:
        return False
    code = int.from_bytes(prog[-8:-6], sys.byteorder)  # struct sock_filter { __u16 code; ... }
    return code & 0x07 == BPF_RET


def cap_names(caps) -> frozenset[str]:
    """Capability names as profiles write them: 'CAP_SYS_ADMIN' (a bare 'SYS_ADMIN' gains the prefix)."""
    return frozenset(c if c.startswith("CAP_") else f"CAP_{c}" for c in (str(c).upper() for c in caps))


@functools.lru_cache(maxsize=1)
def host() -> tuple[str, str]:
    """(the native SCMP_ARCH name, the arch name includes/excludes use); StepFailed on an unknown machine."""
    machine = os.uname().machine
    if machine not in HOSTS:
        raise StepFailed(f"seccomp: no profile mapping for the {machine} architecture; run with --security-opt "
                         "seccomp=unconfined")
    return HOSTS[machine]


def _kernel_version(release: str) -> tuple[int, int, int]:
    """'6.1.0-18-amd64' -> (6, 1, 0)."""
    match = KERNEL_VERSION.match(release)
    if not match:
        return (0, 0, 0)
    return tuple(int(part or 0) for part in match.groups())


# --- the cache ---------------------------------------------------------------------------------

def program(source: str, caps: frozenset[str], cache_dir: str, tightening: dict | None = None) -> bytes:
    """The BPF program for the profile file `source` and the container's capabilities, compiled once and
    then read from `<cache_dir>/<key>.bpf`; `tightening` (see tighten) is applied to the file first.
    BadInput for a malformed profile, StepFailed for a cache that cannot be written or a profile
    libseccomp refuses."""
    data = read_profile(source)
    caps = cap_names(caps)
    extra = json.dumps(tightening, sort_keys=True).encode() if tightening else b""
    path = os.path.join(cache_dir, _cache_key(data + extra, caps) + ".bpf")
    cached = _read_cache(path)
    if cached is not None:
        return cached
    profile = parse_profile(source, data)
    compiled = compile_program(tighten(profile, tightening) if tightening else profile, caps)
    _write_cache(cache_dir, path, compiled)
    return compiled


def _cache_key(data: bytes, caps: frozenset[str]) -> str:
    """sha256 of everything the program depends on: the profile, the capabilities, the arch, the kernel
    (minKernel rules; the actions it supports) and libseccomp (its syscall tables, its code generator)."""
    h = hashlib.sha256(CACHE_FORMAT)
    for part in (data, "\n".join(sorted(caps)).encode(), os.uname().machine.encode(), os.uname().release.encode(),
                 _libseccomp_version().encode()):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


LIBSECCOMP_DIRS = ("/usr/lib/{triplet}", "/lib/{triplet}", "/usr/lib64", "/lib64", "/usr/lib", "/lib")


@functools.lru_cache(maxsize=1)
def _libseccomp_version() -> str:
    """Which libseccomp compiles: the shared object's real name (libseccomp.so.2.5.4), size and mtime,
    found with a few stats (about 20 us, where loading it costs 2 ms on every start); where it is not in
    the usual places, its own seccomp_version(). A library upgrade changes the key either way."""
    triplet = f"{os.uname().machine}-linux-gnu"
    for directory in LIBSECCOMP_DIRS:
        path = os.path.join(directory.format(triplet=triplet), "libseccomp.so.2")
        try:
            st = os.stat(path)
        except OSError:
            continue
        return f"{os.path.realpath(path)} {st.st_size} {st.st_mtime_ns}"
    return _loaded_libseccomp_version()


def _loaded_libseccomp_version() -> str:
    """libseccomp's seccomp_version() (pyseccomp does not expose it; importing pyseccomp runs ldconfig).
    Falls back to pyseccomp's version."""
    import ctypes

    class Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    try:
        lib = ctypes.CDLL("libseccomp.so.2")
        lib.seccomp_version.restype = ctypes.POINTER(Version)
        v = lib.seccomp_version().contents
        return f"libseccomp {v.major}.{v.minor}.{v.micro}"
    except (OSError, AttributeError, ValueError):
        import pyseccomp

        return f"pyseccomp {pyseccomp.__version__}"


def _read_cache(path: str) -> bytes | None:
    """The cached program, or None when absent, unreadable or not a loadable program (torn or corrupt):
    then it is compiled again, and writing the entry reports what is wrong with the cache."""
    try:
        with open(path, "rb") as f:
            cached = f.read(8 * BPF_MAXINSNS + 1)
    except OSError:
        return None
    return cached if _is_program(cached) else None


def _write_cache(cache_dir: str, path: str, compiled: bytes) -> None:
    """tmp + fsync + rename: a reader sees the whole program or none (rename(2) is atomic), after a crash too."""
    import tempfile

    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".", suffix=".tmp")  # mode 0600
    except OSError as e:
        raise StepFailed(f"cannot write the seccomp cache in {cache_dir}: {e.strerror}; check that directory")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(compiled)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except OSError as e:
        _unlink(tmp)
        raise StepFailed(f"cannot write the seccomp cache {path}: {e.strerror}; check {cache_dir}")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
