"""The security profile of a container: capabilities, seccomp, no_new_privs, masks.

Defaults are Docker's (steps/profiles/default.json); `--privileged`, `--cap-add`,
`--cap-drop` and `--security-opt` loosen or tighten them, with Docker's meanings.
Everything here is validated when the spec is built, before anything is made.
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

from steps import BadInput
from steps.profiles import defaults

# capabilities(7), include/uapi/linux/capability.h: the number is the bit.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)
DEFAULT_SECURITY_OPTS = {"seccomp": "default", "no_new_privileges": False}  # Docker's, with no --security-opt
SECURITY_OPT_HINT = "use seccomp=unconfined, seccomp=/path/profile.json or no-new-privileges"


@functools.lru_cache(maxsize=1)
def kernel_last_cap() -> int:
    """The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap): every one up to it
    leaves the bounding set unless kept, named here or not (a newer kernel's too)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1


def known_capabilities() -> tuple[str, ...]:
    """The capabilities this kernel knows and we can name, without CAP_."""
    return CAPABILITIES[:kernel_last_cap() + 1]


def cap_name(raw: str, flag: str) -> str:
    """'net_admin', 'CAP_NET_ADMIN', 'ALL' -> 'NET_ADMIN' / 'ALL'; refuses unknown names."""
    given = str(raw).strip().upper()
    name = given[4:] if given.startswith("CAP_") else given
    if name not in CAPABILITIES and given != "ALL":
        raise BadInput(f"bad {flag} {raw!r}: not a capability; use a name from capabilities(7) such as "
                       "NET_ADMIN or CAP_SYS_TIME (with or without CAP_), or ALL")
    return name


def parse_caps(items: list[str] | None, flag: str) -> list[str]:
    return sorted({cap_name(item, flag) for item in items or []})


def parse_security_opts(items: list[str] | None) -> dict:
    """--security-opt: seccomp=unconfined|PATH, no-new-privileges[=true|false] (':' works as '=')."""
    out = dict(DEFAULT_SECURITY_OPTS)
    for item in items or []:
        text = str(item)
        key, sep, value = text.partition("=") if "=" in text else text.partition(":")  # '=' first: paths hold ':'
        if key == "no-new-privileges" and value in ("", "true", "false"):
            out["no_new_privileges"] = value != "false"
        elif key == "seccomp" and value:
            out["seccomp"] = value if value == "unconfined" else seccomp_file(value)
        else:
            raise BadInput(f"bad --security-opt {item!r}: {SECURITY_OPT_HINT}")
    return out


def seccomp_file(path: str) -> str:
    """A profile file named by the user: absolute, and valid now (refused before anything is made)."""
    from steps.runtime.seccomp_profile import load_profile

    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise BadInput(f"bad --security-opt seccomp={path}: no such file; give a JSON profile in Docker's "
                       "format, or seccomp=unconfined")
    load_profile(full)
    return full


def effective_caps(privileged: bool, add: list[str], drop: list[str]) -> list[str]:
    """Docker's rules: ALL in --cap-add starts from every capability, ALL in --cap-drop from none;
    then the named ones are added and dropped."""
    known = known_capabilities()
    if privileged:
        return list(known)
    caps = {c[4:] for c in defaults()["capabilities"]}
    if "ALL" in drop:
        caps = set()
    if "ALL" in add:
        caps = set(known)
    caps |= {c for c in add if c != "ALL"}
    caps -= {c for c in drop if c != "ALL"}
    return [c for c in known if c in caps]


def cap_mask(caps: list[str]) -> int:
    return sum(1 << CAPABILITIES.index(c) for c in caps)


class Profile(NamedTuple):
    """What confines one container, resolved from its spec."""

    privileged: bool
    caps: list[str]
    seccomp: str  # "default", "unconfined" or the path of a profile file
    no_new_privileges: bool
    masked_paths: list[str]
    readonly_paths: list[str]

    @property
    def seccomp_source(self) -> str | None:
        """The profile file to compile, or None for no filter."""
        from steps.runtime.seccomp import default_profile_path

        if self.privileged or self.seccomp == "unconfined":
            return None
        return default_profile_path() if self.seccomp == "default" else self.seccomp

    def describe(self) -> dict:
        """For `inspect`: the effective confinement."""
        from steps import DiyError

        try:
            source = self.seccomp_source
        except DiyError as e:
            source = f"missing: {e}"
        return {"privileged": self.privileged, "capabilities": [f"CAP_{c}" for c in self.caps],
                "seccomp": "unconfined" if self.privileged else self.seccomp, "seccomp_profile": source,
                "no_new_privileges": self.no_new_privileges,
                "masked_paths": self.masked_paths, "readonly_paths": self.readonly_paths}


def resolve(spec: dict) -> Profile:
    privileged = bool(spec.get("privileged"))
    opts = spec.get("security_opt") or DEFAULT_SECURITY_OPTS
    data = defaults()
    return Profile(privileged=privileged,
                   caps=effective_caps(privileged, spec.get("cap_add") or [], spec.get("cap_drop") or []),
                   seccomp=opts["seccomp"], no_new_privileges=opts["no_new_privileges"],
                   masked_paths=[] if privileged else list(data["masked_paths"]),
                   readonly_paths=[] if privileged else list(data["readonly_paths"]))
