"""What feeds libarchive a layer: the decompressed stream, hashed and counted.

A feeder thread decompresses (by magic bytes), hashes (the diff id) and counts
the stream into a pipe, so a layer inflating past the limit is stopped; an
uncompressed tar file is read by libarchive itself and hashed beside it.
"""
from __future__ import annotations

import hashlib
import os
import stat
import threading
from typing import BinaryIO

from steps import BadInput

CHUNK = 1 << 20


class Inflated(BadInput):
    pass


def zstd_reader(f: BinaryIO) -> BinaryIO:
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)


def gzip_reader(f: BinaryIO) -> BinaryIO:
    import gzip

    return gzip.GzipFile(fileobj=f, mode="rb")


def bzip2_reader(f: BinaryIO) -> BinaryIO:
    import bz2

    return bz2.BZ2File(f, mode="rb")


def xz_reader(f: BinaryIO) -> BinaryIO:
    import lzma

    return lzma.LZMAFile(f, mode="rb")


# magic bytes -> the reader that decompresses them (imported when needed: a plain tar needs none)
DECOMPRESSORS = {
    b"\x1f\x8b": gzip_reader,
    b"\x28\xb5\x2f\xfd": zstd_reader,
    b"BZh": bzip2_reader,
    b"\xfd7zXZ\x00": xz_reader,
}


def compressed_by(head: bytes):
    """The decompressor the first bytes of a stream ask for, or None."""
    return next((make for magic, make in DECOMPRESSORS.items() if head.startswith(magic)), None)


def decompressed(f: BinaryIO) -> BinaryIO:
    """Wrap f in the decompressor its magic bytes ask for (gzip, zstd, bzip2, xz, none)."""
    make = compressed_by(f.peek(6)[:6] if hasattr(f, "peek") else b"")
    return make(f) if make else f


class Feeder(threading.Thread):
    """Decompresses, hashes and counts the stream, and writes it into a pipe for libarchive."""

    def __init__(self, source: BinaryIO, fd: int, limit: int | None):
        super().__init__(daemon=True)
        self.source, self.fd, self.limit = source, fd, limit
        self.sha = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.pump()
        except BrokenPipeError:
            pass  # the reader stopped first: its error is the one to report
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error = e
        finally:
            os.close(self.fd)

    def pump(self) -> None:
        stream = decompressed(self.source)
        while data := stream.read(CHUNK):
            self.size += len(data)
            if self.limit is not None and self.size > self.limit:
                raise Inflated(f"layer inflates past the limit of {self.limit} bytes; "
                               "raise max_layer_bytes in the config if this image is genuine")
            self.sha.update(data)
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]


class FileHasher(threading.Thread):
    """For an uncompressed tar file: libarchive reads the file itself, and this
    thread hashes it beside, through an open file of its own."""

    def __init__(self, fd: int, limit: int | None):
        super().__init__(daemon=True)
        self.fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        self.sha = hashlib.sha256()
        self.size = os.fstat(self.fd).st_size
        self.error: BaseException | None = None
        if limit is not None and self.size > limit:
            os.close(self.fd)
            raise Inflated(f"layer is {self.size} bytes, past the limit of {limit} bytes; "
                           "raise max_layer_bytes in the config if this image is genuine")

    def run(self) -> None:
        buf = bytearray(4 * CHUNK)  # reused: a fresh bytes per read can cost a page fault a page
        view = memoryview(buf)
        try:
            while n := os.readv(self.fd, [buf]):
                self.sha.update(view[:n])
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error = e
        finally:
            os.close(self.fd)


def plain_file(fileobj: BinaryIO) -> int | None:
    """The fd of an uncompressed regular file read from its start, else None."""
    try:
        fd = fileobj.fileno()
        at_start = fileobj.tell() == 0
    except (AttributeError, OSError, ValueError):
        return None
    if not at_start or not stat.S_ISREG(os.fstat(fd).st_mode):
        return None
    return None if compressed_by(os.pread(fd, 6, 0)) else fd
