"""Safe, member-by-member extraction of a layer tarball into a fresh directory.

Python's tarfile is not safe as-is for image layers: its default follows
symlinks while writing, and its "data" filter breaks real images (setuid
bits, absolute symlinks, devices). Here:
  - a member path with '..' is refused; a leading '/' is stripped (GNU tar's way);
  - every parent directory must be a real directory inside the layer (never a
    symlink), so no write leaves it; files are opened with O_NOFOLLOW|O_EXCL;
  - symlinks may point anywhere but are never followed while extracting;
  - hardlinks must name a file already extracted into the same layer;
  - devices, setuid bits, owners and file capabilities are kept;
    overlayfs's own xattrs (trusted.overlay.*) are dropped.
The digest of the uncompressed stream (the layer's diff id) is computed on the way.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import zlib

from steps import BadInput

CHUNK = 1 << 20


class HashingReader:
    """A read-only file object that hashes and counts what passes through it."""

    def __init__(self, raw, limit: int | None):
        self.raw, self.limit = raw, limit
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise BadInput(f"layer is larger than the limit of {self.limit} bytes uncompressed; "
                           "raise max_layer_bytes in the config if this image is genuine")
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def decompressed(f):
    """Wrap f in the decompressor its magic bytes ask for (gzip, bzip2, xz, none)."""
    head = f.peek(6)[:6] if hasattr(f, "peek") else b""
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=f, mode="rb")
    if head.startswith(b"BZh"):
        return bz2.BZ2File(f, mode="rb")
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(f, mode="rb")
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        raise BadInput("zstd-compressed tarballs are not supported yet: decompress it first (zstd -d)")
    return f


def member_parts(name: str) -> list[str]:
    """The path components of a member name, contained in the layer root."""
    parts = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise BadInput(f"refusing tar member {name!r}: '..' would leave the image root")
        parts.append(part)
    return parts


class Extractor:
    def __init__(self, dest: str):
        self.dest = dest
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []

    def path(self, parts: list[str]) -> str:
        return os.path.join(self.dest, *parts)

    def ensure_parents(self, parts: list[str], name: str) -> None:
        """Every parent must be a real directory in the layer; missing ones are made."""
        current = self.dest
        for part in parts[:-1]:
            current = os.path.join(current, part)
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                os.mkdir(current, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise BadInput(f"refusing tar member {name!r}: its parent {part!r} is a symlink "
                               "and writing through it could leave the image root")
            if not stat.S_ISDIR(st.st_mode):
                raise BadInput(f"refusing tar member {name!r}: its parent {part!r} is not a directory")

    def real_dir(self, target: str) -> bool:
        """target and all its parents below dest are directories, none a symlink."""
        rel = os.path.relpath(target, self.dest).split("/")
        current = self.dest
        for part in rel:
            current = os.path.join(current, part)
            try:
                if not stat.S_ISDIR(os.lstat(current).st_mode):
                    return False
            except FileNotFoundError:
                return False
        return True

    def clear(self, target: str, keep_dir: bool) -> None:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if not keep_dir:
                shutil.rmtree(target)
                self.dirs = [d for d in self.dirs if d[0] != target and not d[0].startswith(target + "/")]
        else:
            os.unlink(target)

    def member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = member_parts(m.name)
        if not parts:
            return  # the root itself: the layer directory keeps its own mode
        self.ensure_parents(parts, m.name)
        target = self.path(parts)
        self.clear(target, keep_dir=m.isdir())
        self.create(tf, m, target)
        if m.isdir():
            self.dirs.append((target, m))
        else:
            self.metadata(target, m)

    def create(self, tf: tarfile.TarFile, m: tarfile.TarInfo, target: str) -> None:
        if m.isreg():
            self.write_file(tf, m, target)
        elif m.isdir():
            if not os.path.isdir(target):
                os.mkdir(target, 0o700)
        elif m.issym():
            os.symlink(m.linkname, target)
        elif m.islnk():
            self.hardlink(m, target)
        elif m.ischr() or m.isblk():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(target, kind | 0o600, os.makedev(m.devmajor, m.devminor))
        elif m.isfifo():
            os.mkfifo(target, 0o600)
        else:
            raise BadInput(f"refusing tar member {m.name!r}: unsupported type {m.type!r}")

    def write_file(self, tf: tarfile.TarFile, m: tarfile.TarInfo, target: str) -> None:
        src = tf.extractfile(m)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)

    def hardlink(self, m: tarfile.TarInfo, target: str) -> None:
        parts = member_parts(m.linkname)
        if not parts:
            raise BadInput(f"refusing tar member {m.name!r}: hardlink to the image root")
        self.ensure_parents(parts, m.linkname)
        source = self.path(parts)
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            raise BadInput(f"refusing tar member {m.name!r}: hardlink target {m.linkname!r} "
                           "is not in this layer") from None
        if stat.S_ISDIR(st.st_mode):
            raise BadInput(f"refusing tar member {m.name!r}: hardlink to a directory")
        os.link(source, target, follow_symlinks=False)

    def metadata(self, target: str, m: tarfile.TarInfo) -> None:
        if m.islnk():
            return  # shares the inode (and metadata) of its target
        os.lchown(target, m.uid, m.gid)
        if not m.issym():
            os.chmod(target, m.mode & 0o7777)  # after chown, which clears setuid
        self.xattrs(target, m)
        os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)

    def xattrs(self, target: str, m: tarfile.TarInfo) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            attr = key[len("SCHILY.xattr."):]
            if attr.startswith("trusted.overlay."):
                continue  # would change how overlayfs reads the layer
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            try:
                os.setxattr(target, attr, raw, follow_symlinks=False)
            except OSError:
                pass  # an xattr the filesystem does not support is not worth failing for

    def finish(self) -> None:
        """Directory modes and times last, deepest first, so writes into them worked.
        A later member may have replaced a directory (or a parent) with a symlink:
        such entries are skipped, and the rest are changed through an O_NOFOLLOW fd."""
        for target, m in sorted(self.dirs, key=lambda d: d[0].count("/"), reverse=True):
            if not self.real_dir(target):
                continue
            fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, m.mode & 0o7777)
                self.xattrs(f"/proc/self/fd/{fd}", m)
                os.utime(fd, (m.mtime, m.mtime))
            finally:
                os.close(fd)


def extract(fileobj, dest: str, limit: int | None = None) -> tuple[str, int]:
    """Extract a (possibly compressed) tar stream into dest; returns (diff id, size)."""
    reader = HashingReader(decompressed(fileobj), limit)
    ex = Extractor(dest)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tf:
            for m in tf:
                ex.member(tf, m)
        reader.drain()
    except tarfile.TarError as e:
        raise BadInput(f"not a valid tar archive: {e}") from None
    except (EOFError, gzip.BadGzipFile, lzma.LZMAError, zlib.error) as e:
        raise BadInput(f"cannot read the archive: {e}") from None
    ex.finish()
    return "sha256:" + reader.sha.hexdigest(), reader.size
