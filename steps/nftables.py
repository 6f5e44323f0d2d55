"""nftables through libnftables (Debian's libnftables1, shipped with the nftables package) by
ctypes: a context per process (and network namespace), made on first use, so a command costs
a netlink round trip (~0.1-1 ms) instead of an `nft` process (~6-7 ms). Where the library
cannot be loaded, the same commands go to `nft` in a subprocess.

A library binding, so its own module (the project's syscalls are in steps/linux.py).
"""
from __future__ import annotations

import json
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ctypes
    import subprocess

LIBRARY = "libnftables.so.1"
NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_HANDLE = 1 << 3
NFT_CTX_OUTPUT_JSON = 1 << 4  # nft 1.0.6 reads JSON input only with this flag on (no input flags yet)
ARG_MAX = 64 * 1024  # below the kernel's limit of one argument (128 KiB)
ENOENT_TEXT = "No such file or directory"  # nft's error for a table, chain or rule that is not there

_lib: ctypes.CDLL | None = None
_contexts: dict[int, int] = {}  # network namespace (inode) -> context: a context's socket stays in its netns
_pid = 0
_tried = False
_lock = threading.Lock()


def _load() -> ctypes.CDLL | None:
    """The library with its prototypes, or None (then `nft` runs instead)."""
    global _lib, _tried
    if not _tried:
        _tried = True
        import ctypes  # here: the read-only commands never pay its import

        try:
            lib = ctypes.CDLL(LIBRARY)
        except OSError:
            return None
        vp, cp = ctypes.c_void_p, ctypes.c_char_p
        lib.nft_ctx_new.argtypes, lib.nft_ctx_new.restype = [ctypes.c_uint32], vp
        lib.nft_ctx_free.argtypes, lib.nft_ctx_free.restype = [vp], None
        lib.nft_ctx_output_set_flags.argtypes, lib.nft_ctx_output_set_flags.restype = [vp, ctypes.c_uint], None
        lib.nft_ctx_buffer_output.argtypes, lib.nft_ctx_buffer_output.restype = [vp], ctypes.c_int
        lib.nft_ctx_buffer_error.argtypes, lib.nft_ctx_buffer_error.restype = [vp], ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes, lib.nft_run_cmd_from_buffer.restype = [vp, cp], ctypes.c_int
        lib.nft_ctx_get_output_buffer.argtypes, lib.nft_ctx_get_output_buffer.restype = [vp], cp
        lib.nft_ctx_get_error_buffer.argtypes, lib.nft_ctx_get_error_buffer.restype = [vp], cp
        _lib = lib
    return _lib


def _context() -> int | None:
    """This process's context for the calling thread's network namespace. A forked child makes
    its own (the netlink socket is per process) and frees its parent's copies, so a daemon does
    not keep their sockets open."""
    global _pid
    lib = _load()
    if lib is None:
        return None
    if _pid != os.getpid():
        for ctx in _contexts.values():
            lib.nft_ctx_free(ctx)
        _contexts.clear()
        _pid = os.getpid()
    netns = os.stat("/proc/thread-self/ns/net").st_ino
    if netns not in _contexts:
        ctx = lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not ctx or lib.nft_ctx_buffer_output(ctx) or lib.nft_ctx_buffer_error(ctx):
            return None
        _contexts[netns] = ctx
    return _contexts[netns]


def available() -> bool:
    """Whether commands run in this process (the library) rather than by `nft`."""
    return _context() is not None


def run(commands: str, json_in: bool = False, json_out: bool = False) -> tuple[int, str, str]:
    """Run commands (nft's syntax, or a JSON batch with json_in) as one transaction:
    (return code, output, errors); code 0 is success."""
    with _lock:
        ctx = _context()
        if ctx is not None:
            assert _lib is not None
            as_json = json_in or json_out
            _lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE if as_json else 0)
            rc = _lib.nft_run_cmd_from_buffer(ctx, commands.encode())
            out, err = _lib.nft_ctx_get_output_buffer(ctx), _lib.nft_ctx_get_error_buffer(ctx)
            return rc, (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace")
    return _subprocess(commands, json_in or json_out)


def _subprocess(commands: str, as_json: bool) -> tuple[int, str, str]:
    """`nft` parses its arguments as one buffer, as the library does; `-f -` only for a batch
    too long for an argument (nft 1.0.6 prints no JSON for a list read from a file)."""
    import subprocess

    argv, stdin = (["-f", "-"], commands) if len(commands) > ARG_MAX else ([commands], None)
    try:
        proc = subprocess.run(["nft", *(["-j"] if as_json else []), *argv], input=stdin,
                              capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return 127, "", "nft is not installed (apt-get install nftables)"
    return proc.returncode, proc.stdout, proc.stderr


def completed(commands: str, json_in: bool = False, json_out: bool = False) -> subprocess.CompletedProcess:
    """run() as a CompletedProcess, for callers written around `nft`'s (stdout, stderr, returncode)."""
    import subprocess

    rc, out, err = run(commands, json_in, json_out)
    return subprocess.CompletedProcess(["nft", commands], rc, out, err)


def list_json(command: str) -> list[dict]:
    """The items of a list command's JSON output (metainfo left out); raises NftError."""
    rc, out, err = run(command, json_out=True)
    if rc != 0:
        raise NftError(command, err)
    items: list[dict] = []
    for line in out.splitlines():  # one document per command that printed
        if line.strip():
            items += [i for i in json.loads(line).get("nftables", []) if "metainfo" not in i]
    return items


class NftError(Exception):
    def __init__(self, command: str, err: str):
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("# Warning")]
        self.missing = ENOENT_TEXT in err
        super().__init__(lines[0] if lines else f"nft failed: {command}")
