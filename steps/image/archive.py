"""libarchive through ctypes: the calls extraction makes, bound once, on first use.

In place of libarchive-c, whose import (its ~150 bindings, logging, ctypes.util)
cost 5-10 ms of every image command's start, and whose calls all let the GIL
go and run a Python error check. Here, calls that do no I/O (the entry's
fields) keep the GIL (PyDLL: letting it go and winning it back costs more than
the call while the hasher thread runs); reading and writing let it go (CDLL).
Return codes are checked by the caller, inline: OK/EOF go on, a warning is
printed to stderr (as libarchive-c logged it) and the rest raise ArchiveError.
A call that failed because a resource ran out (its archive_errno: ENOSPC, EMFILE...)
raises that OSError instead, warning or not: libarchive reports a short data write
as a warning ("Write failed"), and going past it would keep a truncated file.
"""
from __future__ import annotations

import ctypes
import glob
import os
import sys

from steps.exhaustion import EXHAUSTED

EOF, OK, RETRY, WARN, FAILED, FATAL = 1, 0, -10, -20, -25, -30

EXTRACT_OWNER = 0x0001
EXTRACT_PERM = 0x0002
EXTRACT_TIME = 0x0004
EXTRACT_XATTR = 0x0080
EXTRACT_SECURE_NODOTDOT = 0x0200
EXTRACT_SECURE_NOABSOLUTEPATHS = 0x10000

LIBRARY_PATTERNS = ("/usr/lib/*/libarchive.so.13", "/usr/lib64/libarchive.so.13", "/usr/lib/libarchive.so.13")


class ArchiveError(Exception):
    """A libarchive call failed; msg is libarchive's own line."""

    def __init__(self, msg: str):
        super().__init__(msg)
        self.msg = msg


def library_path() -> str:
    """LIBARCHIVE when set, else Debian's libarchive13 (no ctypes.util.find_library: it runs
    ldconfig and gcc)."""
    if os.environ.get("LIBARCHIVE"):
        return os.environ["LIBARCHIVE"]
    for pattern in LIBRARY_PATTERNS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    from steps import DiyError

    raise DiyError("libarchive is not installed (Debian: apt-get install libarchive13)")


class Lib:
    def __init__(self, path: str):
        released, held = ctypes.CDLL(path), ctypes.PyDLL(path)
        p, i, s, c, v = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p
        ll = ctypes.c_longlong
        pp, ps, pll, pc = ctypes.POINTER(p), ctypes.POINTER(s), ctypes.POINTER(ll), ctypes.POINTER(c)

        def bind(dll, name, argtypes, restype):
            f = getattr(dll, "archive_" + name)
            f.argtypes, f.restype = argtypes, restype
            return f

        # reading and writing: I/O, the GIL let go
        self.read_open_fd = bind(released, "read_open_fd", [p, i, s], i)
        self.read_next_header = bind(released, "read_next_header", [p, pp], i)
        self.read_data_block = bind(released, "read_data_block", [p, pp, ps, pll], i)
        self.read_free = bind(released, "read_free", [p], i)
        self.write_header = bind(released, "write_header", [p, p], i)
        self.write_data_block = bind(released, "write_data_block", [p, v, s, ll], i)
        self.write_finish_entry = bind(released, "write_finish_entry", [p], i)
        self.write_close = bind(released, "write_close", [p], i)
        self.write_free = bind(released, "write_free", [p], i)
        # the rest: no I/O, the GIL kept
        self.read_new = bind(held, "read_new", [], p)
        self.read_support_filter_none = bind(held, "read_support_filter_none", [p], i)
        self.read_support_format_tar = bind(held, "read_support_format_tar", [p], i)
        self.write_disk_new = bind(held, "write_disk_new", [], p)
        self.write_disk_set_options = bind(held, "write_disk_set_options", [p, i], i)
        self.error_string = bind(held, "error_string", [p], c)
        self.errno = bind(held, "errno", [p], i)
        self.pathname = bind(held, "entry_pathname", [p], c)
        self.copy_pathname = bind(held, "entry_copy_pathname", [p, c], None)
        self.hardlink = bind(held, "entry_hardlink", [p], c)
        self.copy_hardlink = bind(held, "entry_copy_hardlink", [p, c], None)
        self.filetype = bind(held, "entry_filetype", [p], i)
        self.set_size = bind(held, "entry_set_size", [p, ll], None)
        self.xattr_reset = bind(held, "entry_xattr_reset", [p], i)
        self.xattr_clear = bind(held, "entry_xattr_clear", [p], None)
        self.xattr_next = bind(held, "entry_xattr_next", [p, pc, pp, ps], i)
        self.xattr_add = bind(held, "entry_xattr_add_entry", [p, c, v, s], None)

    def check(self, archive, ret: int) -> int:
        """ret when it is OK or EOF; a warning is printed and passed; anything else raises."""
        if ret >= OK:
            return ret
        msg = self.message(archive)
        code = self.errno(archive)
        if code in EXHAUSTED:
            raise OSError(code, os.strerror(code))
        if ret == WARN:
            print(f"libarchive: warning: {msg}", file=sys.stderr)
            return ret
        raise ArchiveError(msg)

    def check_write(self, archive, ret: int) -> None:
        """A data write: anything short of OK lost bytes, a warning too."""
        if ret != OK:
            code = self.errno(archive)
            if code in EXHAUSTED:
                raise OSError(code, os.strerror(code))
            raise ArchiveError(self.message(archive))

    def message(self, archive) -> str:
        raw = self.error_string(archive)
        return raw.decode("utf-8", "replace") if raw is not None else "unknown libarchive error"


_LIB: Lib | None = None


def lib() -> Lib:
    global _LIB
    if _LIB is None:
        _LIB = Lib(library_path())
    return _LIB
