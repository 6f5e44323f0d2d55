"""The one door to the kernel: every raw syscall diy-docker makes goes through here.

Each wrapper raises OSError with the operation and the path in the message,
so a failure reads "mount /x on /y: Permission denied".
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2

_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
_KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "ppc64le": 271, "s390x": 280}
_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
KEYCTL_JOIN_SESSION_KEYRING = 1
_CAP_VERSION_3 = 0x20080522
_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _raise(op: str, *paths: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{op} {' '.join(p for p in paths if p)}: {os.strerror(err)}")


def _b(value: str | None):
    return value.encode() if value is not None else None


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    if _lib().mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)) != 0:
        _raise("mount", source or fstype or "", "on", target)


def umount(target: str, flags: int = 0) -> None:
    if _lib().umount2(_b(target), ctypes.c_int(flags)) != 0:
        _raise("umount", target)


def _syscall_number(table: dict[str, int], op: str) -> int:
    number = table.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"{op}: unsupported architecture {os.uname().machine}")
    return number


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2) has no glibc wrapper; the syscall number depends on the arch."""
    number = _syscall_number(_PIVOT_ROOT, "pivot_root")
    if _lib().syscall(ctypes.c_long(number), _b(new_root), _b(put_old)) != 0:
        _raise("pivot_root", new_root)


def unshare(flags: int) -> None:
    if _lib().unshare(ctypes.c_int(flags)) != 0:
        _raise("unshare", hex(flags))


def setns(fd: int, nstype: int = 0) -> None:
    if _lib().setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        _raise("setns", f"fd {fd}")


def prctl(option: int, arg: int = 0, arg3: int = 0) -> None:
    if _lib().prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(arg3),
                    ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        _raise("prctl", str(option))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) of this thread, 64-bit masks (version 3: two 32-bit words each)."""
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    if _lib().capset(ctypes.byref(header), data) != 0:
        _raise("capset", hex(permitted))


def drop_bounding(cap: int) -> None:
    """Remove one capability from the bounding set (prctl(2) PR_CAPBSET_DROP); EINVAL means
    the kernel does not know it, so there is nothing to drop."""
    if _lib().prctl(ctypes.c_int(PR_CAPBSET_DROP), ctypes.c_ulong(cap), 0, 0, 0) != 0:
        if ctypes.get_errno() != errno.EINVAL:
            _raise("prctl PR_CAPBSET_DROP", str(cap))


def join_session_keyring() -> None:
    """A new anonymous session keyring (keyctl(2) KEYCTL_JOIN_SESSION_KEYRING with NULL):
    keys added inside never reach the caller's session keyring."""
    number = _syscall_number(_KEYCTL, "keyctl")
    if _lib().syscall(ctypes.c_long(number), ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING), None) < 0:
        _raise("keyctl JOIN_SESSION_KEYRING")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_load(program: bytes) -> None:
    """Install a classic-BPF seccomp filter (struct sock_filter[], 8 bytes each) on this
    thread: prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &sock_fprog), seccomp(2). Needs
    no_new_privs or CAP_SYS_ADMIN."""
    if not program or len(program) % 8:
        raise OSError(errno.EINVAL, "seccomp: a BPF program is a non-empty list of 8-byte instructions")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if _lib().prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                    ctypes.c_void_p(ctypes.addressof(prog)), 0, 0) != 0:
        _raise("prctl PR_SET_SECCOMP")


def sethostname(name: str) -> None:
    socket.sethostname(name)


def link_up(ifname: str = "lo") -> None:
    """Set IFF_UP on an interface of the current network namespace (SIOCSIFFLAGS)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", ifname.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), siocgifflags, req))[1]
        fcntl.ioctl(s.fileno(), siocsifflags, struct.pack("16sH14x", ifname.encode(), flags | iff_up))


def pin_netns(path: str) -> None:
    """Make a new network namespace and pin it with a bind mount on path (an existing file).

    A short child unshares and binds its own /proc/self/ns/net: the namespace then lives
    as long as the mount, with no process in it (as `ip netns add` does)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            unshare(CLONE_NEWNET)
            mount("/proc/self/ns/net", path, None, MS_BIND)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(errno.EIO, f"cannot pin a network namespace on {path}")


def enter_netns(path: str) -> int:
    """setns(2) into the namespace pinned at path; returns an fd to come back with."""
    back = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, CLONE_NEWNET)
    except OSError:
        os.close(back)
        raise
    finally:
        os.close(fd)
    return back


def leave_netns(back: int) -> None:
    try:
        setns(back, CLONE_NEWNET)
    finally:
        os.close(back)


# --- bpf(2): the cgroup v2 device program ---
# include/uapi/linux/bpf.h: each command reads its own member of union bpf_attr. We pass a
# zeroed buffer larger than any kernel's union: the kernel copies what it knows, requires the
# tail to be zero, and may write results back (BPF_PROG_QUERY writes prog_cnt and, since
# 6.6, query.revision at offset 56, past the fields we fill), so writes always land in it.

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
_BPF_ATTR_SIZE = 256
_BPF_LOG_SIZE = 1 << 20


def _bpf_attr(head: bytes) -> ctypes.Array:
    """A zeroed union bpf_attr buffer starting with head; the kernel may write into it."""
    buf = ctypes.create_string_buffer(_BPF_ATTR_SIZE)
    ctypes.memmove(buf, head, len(head))
    return buf


def _bpf_call(cmd: int, attr: ctypes.Array, op: str) -> int:
    """bpf(2) on attr in place; OSError "op: reason" on failure."""
    number = _syscall_number(_BPF, "bpf")
    result = _lib().syscall(ctypes.c_long(number), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{op}: {os.strerror(err)}")
    return result


def _prog_load_attr(prog_type: int, insns: ctypes.Array, license: ctypes.Array, name: bytes,
                    log: ctypes.Array | None) -> ctypes.Array:
    """The BPF_PROG_LOAD member: prog_type, insn_cnt, insns, license, log_level, log_size,
    log_buf, kern_version, prog_flags, prog_name[16] (offsets 0..63)."""
    log_addr = ctypes.addressof(log) if log is not None else 0
    head = struct.pack("=IIQQIIQII16s", prog_type, len(insns) // 8, ctypes.addressof(insns),
                       ctypes.addressof(license), 1 if log is not None else 0,
                       len(log) if log is not None else 0, log_addr, 0, 0, name[:15])
    return _bpf_attr(head)


def _verifier_reason(log: bytes) -> str:
    """The line of the verifier's log that says why it refused (the last one before its
    "processed N insns" statistics), or '' when it wrote nothing."""
    lines = [line.strip() for line in log.split(b"\0", 1)[0].decode(errors="replace").splitlines()]
    lines = [line for line in lines if line and not line.startswith(("processed ", "verification time"))]
    return lines[-1] if lines else ""


def bpf_prog_load(prog_type: int, program: bytes, license: str, name: str = "") -> int:
    """Load an eBPF program (BPF_PROG_LOAD); returns its fd, which the caller closes.

    The first try has no log (a too-small log buffer fails a good program with ENOSPC); on
    failure a second try with a verifier log puts the verifier's reason in the message."""
    if not program or len(program) % 8:
        raise OSError(errno.EINVAL, "bpf BPF_PROG_LOAD: an eBPF program is a non-empty list of 8-byte instructions")
    insns = ctypes.create_string_buffer(program, len(program))
    lic = ctypes.create_string_buffer(license.encode())
    attr = _prog_load_attr(prog_type, insns, lic, name.encode(), None)
    try:
        return _bpf_call(BPF_PROG_LOAD, attr, "bpf BPF_PROG_LOAD")
    except OSError as first:
        log = ctypes.create_string_buffer(_BPF_LOG_SIZE)
        attr = _prog_load_attr(prog_type, insns, lic, name.encode(), log)
        try:
            return _bpf_call(BPF_PROG_LOAD, attr, "bpf BPF_PROG_LOAD")
        except OSError:
            reason = _verifier_reason(log.raw)
            raise OSError(first.errno, f"{first.strerror}" + (f" (verifier: {reason})" if reason else "")) from None


def bpf_prog_attach(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0) -> None:
    """Attach a loaded program to a target (BPF_PROG_ATTACH: target_fd, attach_bpf_fd,
    attach_type, attach_flags); for cgroup programs the target is the cgroup directory's fd."""
    attr = _bpf_attr(struct.pack("=IIII", target_fd, prog_fd, attach_type, flags))
    _bpf_call(BPF_PROG_ATTACH, attr, "bpf BPF_PROG_ATTACH")


def bpf_prog_query(target_fd: int, attach_type: int) -> int:
    """How many programs of attach_type are attached to the target itself (BPF_PROG_QUERY
    with query_flags 0, so not the inherited ones; prog_ids NULL asks only for the count)."""
    attr = _bpf_attr(struct.pack("=IIIIQI", target_fd, attach_type, 0, 0, 0, 0))
    _bpf_call(BPF_PROG_QUERY, attr, "bpf BPF_PROG_QUERY")
    return struct.unpack_from("=I", attr, 24)[0]


def daemonize(child, r: int, w: int) -> None:
    """Run child() in a grandchild in a session of its own - a daemon: no controlling terminal,
    not our child - which keeps w of the pipe r/w while we keep r; returns once the middle
    process is gone. Neither process ever comes back into the caller's code."""
    first = os.fork()
    if first == 0:
        try:
            os.close(r)
            os.setsid()
            if os.fork() == 0:
                child()
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(first, 0)
