"""Docker's seccomp profile format (moby profiles/seccomp, as /usr/share/containers/seccomp.json is
written): read, validated and normalised, so that a malformed file is refused in one line before
anything is made; and the tightening a default container's profile gets (see tighten).
"""
from __future__ import annotations

import functools
import json
import os
import re
import stat

from steps import BadInput

KERNEL_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")

MAX_PROFILE_BYTES = 4 << 20  # Docker's default profile is ~20 KiB; a bigger file is a mistake
MAX_ERRNO = 4095  # the kernel clamps SECCOMP_RET_ERRNO data to MAX_ERRNO
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
TOP_KEYS = ("defaultAction", "defaultErrnoRet", "defaultErrno", "architectures", "archMap", "syscalls", "flags",
            "listenerPath", "listenerMetadata", "comment")
RULE_KEYS = ("name", "names", "action", "errnoRet", "errno", "args", "comment", "includes", "excludes")
ARG_KEYS = ("index", "value", "valueTwo", "op")
FILTER_KEYS = ("caps", "arches", "minKernel")


# --- reading and validating a profile ---------------------------------------------------------

def load_profile(path: str) -> dict:
    """Read and validate a Docker-format profile; returns it normalised (Docker's format, every key
    present). BadInput, one line, on anything malformed."""
    return parse_profile(path, read_profile(path))


def read_profile(path: str) -> bytes:
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


def parse_profile(where: str, data: bytes) -> dict:
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
