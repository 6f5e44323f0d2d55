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
import re
import stat
import sys

from steps import BadInput, StepFailed

MAX_PROFILE_BYTES = 4 << 20  # Docker's default profile is ~20 KiB; a bigger file is a mistake
CACHE_FORMAT = b"diy-docker seccomp cache 1"  # bump when compile_program emits something different
BPF_MAXINSNS = 4096  # include/uapi/linux/bpf_common.h: the kernel refuses longer classic programs
BPF_RET = 0x06  # the instruction class that ends a program; the kernel requires it last
MAX_ERRNO = 4095  # the kernel clamps SECCOMP_RET_ERRNO data to MAX_ERRNO
SCMP_ERROR = -1  # __NR_SCMP_ERROR: libseccomp does not know the syscall name
MISSING_PROFILE_HINT = ("install golang-github-containers-common, or run with --security-opt seccomp=unconfined "
                        "(no filter)")

ACTIONS = ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
           "SCMP_ACT_TRAP", "SCMP_ACT_TRACE", "SCMP_ACT_LOG")
WITH_DATA = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")  # the actions whose 16 data bits errnoRet sets
# libseccomp's enum scmp_compare, Docker's names -> pyseccomp's constants.
OPS = {"SCMP_CMP_NE": "NE", "SCMP_CMP_LT": "LT", "SCMP_CMP_LE": "LE", "SCMP_CMP_EQ": "EQ",
       "SCMP_CMP_GE": "GE", "SCMP_CMP_GT": "GT", "SCMP_CMP_MASKED_EQ": "MASKED_EQ"}
# libseccomp's SCMP_ARCH_* names -> pyseccomp.Arch attributes (the last four need libseccomp >= 2.6).
ARCHES = {f"SCMP_ARCH_{a}": a for a in (
    "X86", "X86_64", "X32", "ARM", "AARCH64", "MIPS", "MIPS64", "MIPS64N32", "MIPSEL", "MIPSEL64",
    "MIPSEL64N32", "PPC", "PPC64", "PPC64LE", "S390", "S390X", "PARISC", "PARISC64", "RISCV64",
    "LOONGARCH64", "M68K", "SH", "SHEB")}
# uname -m -> (the native SCMP_ARCH, the name includes/excludes.arches use: moby's, from Go's GOARCH).
HOSTS = {"x86_64": ("SCMP_ARCH_X86_64", "amd64"), "i686": ("SCMP_ARCH_X86", "x86"), "i386": ("SCMP_ARCH_X86", "x86"),
         "aarch64": ("SCMP_ARCH_AARCH64", "arm64"), "armv7l": ("SCMP_ARCH_ARM", "arm"),
         "armv8l": ("SCMP_ARCH_ARM", "arm"), "ppc64le": ("SCMP_ARCH_PPC64LE", "ppc64le"),
         "ppc64": ("SCMP_ARCH_PPC64", "ppc64"), "s390x": ("SCMP_ARCH_S390X", "s390x"),
         "riscv64": ("SCMP_ARCH_RISCV64", "riscv64"), "mips64": ("SCMP_ARCH_MIPSEL64", "mipsel64"),
         "loongarch64": ("SCMP_ARCH_LOONGARCH64", "loong64")}
TOP_KEYS = ("defaultAction", "defaultErrnoRet", "defaultErrno", "architectures", "archMap", "syscalls", "flags",
            "listenerPath", "listenerMetadata", "comment")
RULE_KEYS = ("name", "names", "action", "errnoRet", "errno", "args", "comment", "includes", "excludes")
ARG_KEYS = ("index", "value", "valueTwo", "op")
FILTER_KEYS = ("caps", "arches", "minKernel")
KERNEL_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


# --- the default profile ------------------------------------------------------------------

def default_profile_path() -> str:
    """The first existing file of default.json's "seccomp_profiles" (the distribution's default profile)."""
    from steps.runtime.profile import defaults

    candidates = list(defaults()["seccomp_profiles"])
    for path in candidates:
        if os.path.isfile(path):
            return path
    missing = ", ".join(candidates) + (" is" if len(candidates) == 1 else " are")
    raise StepFailed(f"no default seccomp profile: {missing} missing; {MISSING_PROFILE_HINT}")


# --- reading and validating a profile ---------------------------------------------------------

def load_profile(path: str) -> dict:
    """Read and validate a Docker-format profile; returns it normalised (Docker's format, every key
    present). BadInput, one line, on anything malformed."""
    return _parse(path, _read(path))


def _read(path: str) -> bytes:
    """The file's bytes, refusing what is not a regular file of at most MAX_PROFILE_BYTES."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block the open
    except OSError as e:
        raise BadInput(f"bad seccomp profile {path}: cannot read it: {e.strerror}")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BadInput(f"bad seccomp profile {path}: not a regular file; give a JSON profile in Docker's format")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_PROFILE_BYTES + 1)
        except OSError as e:
            raise BadInput(f"bad seccomp profile {path}: cannot read it: {e.strerror}")
    if len(data) > MAX_PROFILE_BYTES:
        raise BadInput(f"bad seccomp profile {path}: larger than {MAX_PROFILE_BYTES >> 20} MiB; a seccomp profile "
                       "is a JSON file of some KiB")
    return data


def _parse(where: str, data: bytes) -> dict:
    if not data.strip():
        raise BadInput(f"bad seccomp profile {where}: the file is empty; a profile is a JSON object such as "
                       '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [...]}')
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BadInput(f"bad seccomp profile {where}: not UTF-8 text (byte {e.start}); a profile is JSON")
    except json.JSONDecodeError as e:
        raise BadInput(f"bad seccomp profile {where}: not JSON: {e.msg} at line {e.lineno} column {e.colno}")
    return validate(doc, where)


def validate(doc: object, where: str = "(in memory)") -> dict:
    """Check a decoded profile against Docker's format; returns it normalised. Idempotent."""
    bad = functools.partial(_bad, where)
    _object(bad, doc, "the top level", TOP_KEYS)
    action = _action_name(bad, doc.get("defaultAction"), "defaultAction")
    out = {"defaultAction": action,
           "defaultErrnoRet": _errno_ret(bad, doc.get("defaultErrnoRet"), "defaultErrnoRet", action),
           "architectures": _arch_list(bad, doc.get("architectures"), "architectures"),
           "archMap": _arch_map(bad, doc.get("archMap")),
           "syscalls": [_rule(bad, rule, f"syscalls[{i}]") for i, rule in enumerate(_list(bad, doc, "syscalls"))]}
    if out["architectures"] and out["archMap"]:
        bad("both 'architectures' and 'archMap' are given; use one (archMap is the current format)")
    for key in ("defaultErrno", "listenerMetadata", "comment"):
        _optional_str(bad, doc.get(key), key)
    if _list(bad, doc, "flags"):
        bad("'flags' are not supported: the filter is installed with prctl(PR_SET_SECCOMP), which takes none; "
            "remove them")
    if _optional_str(bad, doc.get("listenerPath"), "listenerPath"):
        bad("'listenerPath' (SCMP_ACT_NOTIFY, a user-space supervisor) is not supported; remove it")
    return out


def _bad(where: str, message: str) -> None:
    raise BadInput(f"bad seccomp profile {where}: {message}")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)


def _object(bad, value: object, what: str, keys: tuple[str, ...]) -> None:
    if not isinstance(value, dict):
        bad(f"{what} is {_json_type(value)}; it must be a JSON object")
    unknown = sorted(k for k in value if k not in keys)
    if unknown:
        bad(f"{what} has the unknown key {unknown[0]!r}; known keys are {', '.join(keys)}")


def _list(bad, parent: dict, key: str, what: str = "") -> list:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        bad(f"{what or key} is {_json_type(value)}; it must be an array")
    return value


def _optional_str(bad, value: object, what: str) -> str:
    if value is not None and not isinstance(value, str):
        bad(f"{what} is {_json_type(value)}; it must be a string")
    return value or ""


def _strings(bad, parent: dict, key: str, what: str) -> list[str]:
    items = _list(bad, parent, key, what)
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            bad(f"{what}[{i}] is {_json_type(item)}; it must be a non-empty string")
    return list(items)


def _integer(bad, value: object, what: str, low: int, high: int, meaning: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        bad(f"{what} is {_json_type(value)}; it must be an integer ({meaning})")
    if not low <= value <= high:
        bad(f"{what} {value} is out of range; {meaning}")
    return value


def _choice(bad, value: object, what: str, choices, expected: str) -> str:
    """One of a set of names: 'syscalls[3].action 'ALLOW' is not one of SCMP_ACT_ALLOW, ...'."""
    if value is None:
        bad(f"{what} is missing; it must be {expected}")
    if not isinstance(value, str):
        bad(f"{what} is {_json_type(value)}; it must be {expected}")
    if value not in choices:
        bad(f"{what} {value!r} is not {expected}")
    return value


def _action_name(bad, value: object, what: str) -> str:
    if value == "SCMP_ACT_NOTIFY":
        bad(f"{what} SCMP_ACT_NOTIFY needs a user-space supervisor, which diy-docker does not run; use "
            "SCMP_ACT_ERRNO or SCMP_ACT_ALLOW")
    return _choice(bad, value, what, ACTIONS, f"one of {', '.join(ACTIONS)}")


def _errno_ret(bad, value: object, what: str, action: str) -> int | None:
    """ERRNO's data is the errno (clamped by the kernel at MAX_ERRNO); TRACE's is a 16-bit message for the tracer."""
    if value is None:
        return None
    if action not in WITH_DATA:
        bad(f"{what} is given with {action}; only SCMP_ACT_ERRNO and SCMP_ACT_TRACE carry a value")
    if action == "SCMP_ACT_TRACE":
        return _integer(bad, value, what, 0, 0xFFFF, "a tracer message is 0..65535")
    return _integer(bad, value, what, 0, MAX_ERRNO, f"an errno is 0..{MAX_ERRNO}, e.g. 1 (EPERM) or 38 (ENOSYS)")


def _arch_name(bad, value: object, what: str) -> str:
    return _choice(bad, value, what, ARCHES, "an architecture as libseccomp names it, such as SCMP_ARCH_X86_64")


def _arch_list(bad, value: object, what: str) -> list[str]:
    items = _list(bad, {what: value}, what)
    return [_arch_name(bad, item, f"{what}[{i}]") for i, item in enumerate(items)]


def _arch_map(bad, value: object) -> list[dict]:
    out = []
    for i, entry in enumerate(_list(bad, {"archMap": value}, "archMap")):
        what = f"archMap[{i}]"
        _object(bad, entry, what, ("architecture", "subArchitectures"))
        out.append({"architecture": _arch_name(bad, entry.get("architecture"), f"{what}.architecture"),
                    "subArchitectures": _arch_list(bad, entry.get("subArchitectures"),
                                                   f"{what}.subArchitectures")})
    return out


def _rule(bad, rule: object, what: str) -> dict:
    _object(bad, rule, what, RULE_KEYS)
    name = _optional_str(bad, rule.get("name"), f"{what}.name")
    names = _strings(bad, rule, "names", f"{what}.names")
    if name and names:
        bad(f"{what} has both 'name' and 'names'; use 'names' (a list)")
    if not name and "names" not in rule:
        bad(f"{what} names no syscall; give 'names': [\"...\"]")
    action = _action_name(bad, rule.get("action"), f"{what}.action")
    _optional_str(bad, rule.get("errno"), f"{what}.errno")
    _optional_str(bad, rule.get("comment"), f"{what}.comment")
    args = [_arg(bad, arg, f"{what}.args[{i}]") for i, arg in enumerate(_list(bad, rule, "args", f"{what}.args"))]
    if len(args) > 6:
        bad(f"{what}.args has {len(args)} comparisons; a syscall has six arguments")
    return {"names": [name] if name else names, "action": action,
            "errnoRet": _errno_ret(bad, rule.get("errnoRet"), f"{what}.errnoRet", action), "args": args,
            "includes": _filter(bad, rule.get("includes"), f"{what}.includes"),
            "excludes": _filter(bad, rule.get("excludes"), f"{what}.excludes")}


def _arg(bad, arg: object, what: str) -> dict:
    _object(bad, arg, what, ARG_KEYS)
    if "index" not in arg or "op" not in arg:
        bad(f"{what} needs 'index' and 'op' (and 'value', 'valueTwo' for the datum)")
    u64 = "a syscall argument is 0..2**64-1 (an unsigned 64-bit number)"
    op = _choice(bad, arg["op"], f"{what}.op", OPS, f"one of {', '.join(OPS)}")
    # struct seccomp_data has args[6]: the index picks one of them.
    return {"index": _integer(bad, arg["index"], f"{what}.index", 0, 5, "an argument index is 0..5"),
            "value": _integer(bad, arg.get("value", 0), f"{what}.value", 0, 2**64 - 1, u64),
            "valueTwo": _integer(bad, arg.get("valueTwo", 0), f"{what}.valueTwo", 0, 2**64 - 1, u64),
            "op": op}


def _filter(bad, value: object, what: str) -> dict:
    if value is None:
        value = {}
    _object(bad, value, what, FILTER_KEYS)
    kernel = _optional_str(bad, value.get("minKernel"), f"{what}.minKernel")
    if kernel and not KERNEL_VERSION.fullmatch(kernel):
        bad(f"{what}.minKernel {kernel!r} is not a kernel version; write it as \"4.8\" or \"5.10.0\"")
    return {"caps": _strings(bad, value, "caps", f"{what}.caps"),
            "arches": _strings(bad, value, "arches", f"{what}.arches"), "minKernel": kernel}


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
    data = _read(source)
    caps = cap_names(caps)
    extra = json.dumps(tightening, sort_keys=True).encode() if tightening else b""
    path = os.path.join(cache_dir, _cache_key(data + extra, caps) + ".bpf")
    cached = _read_cache(path)
    if cached is not None:
        return cached
    profile = _parse(source, data)
    compiled = compile_program(tighten(profile, tightening) if tightening else profile, caps)
    _write_cache(cache_dir, path, compiled)
    return compiled


def tighten(profile: dict, tightening: dict) -> dict:
    """The profile with Docker's answers where the distribution's differs (steps/profiles/default.json,
    "seccomp_default_tightening"): another default errno, syscall names taken out of every rule that
    allows them without a capability condition, then rules of its own added (in the same format)."""
    doc = validate(profile)
    removed = set(tightening.get("remove", []))
    rules = []
    for rule in doc["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule["includes"]["caps"]:
            rule = {**rule, "names": [n for n in rule["names"] if n not in removed]}
            if not rule["names"]:
                continue
        rules.append(rule)
    extra = validate({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": tightening.get("rules", [])})["syscalls"]
    default_errno = tightening.get("defaultErrnoRet", doc["defaultErrnoRet"])
    return validate({**doc, "defaultErrnoRet": default_errno, "syscalls": rules + extra})


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
