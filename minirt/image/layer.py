"""Layers: the tarballs an image is made of, and unpacking them safely.

A layer is a tar of the files one build step added or changed; a file the step
deleted appears as a *whiteout* ``.wh.<name>``, and ``.wh..wh..opq`` in a
directory means "hide everything below from lower layers" (OCI layer.md).
We unpack each layer into a directory that becomes one overlayfs lower dir,
turning whiteouts into what overlayfs understands: a 0/0 character device for a
deleted file, the ``trusted.overlay.opaque`` xattr for an opaque directory.

A tarball is untrusted input. Every member is created relative to a directory
file descriptor opened with O_NOFOLLOW, component by component, so neither an
absolute path, ``..``, nor a symlink planted by an earlier member (umoci
CVE-2021-29136, containerd CVE-2021-32760) can make us write outside ``dest``.
Also refused: a member that would replace the layer's root (a symlink named
``.`` or ``/``), hard links to anything but a regular file already in the
layer, a bare ``.wh.``, and more than ``max_bytes`` of uncompressed data (a
gzip bomb). So are members no layer needs and no file can have: GNU sparse
files (a 2 KiB member can claim terabytes of holes), a NUL in a name, a time
or an owner out of range. Device nodes are skipped; setuid/setgid bits are
kept only when unpacking as root. A whiteout hides files of *lower* layers
only, never one the same layer created (image-spec layer.md). Python's
``tarfile`` extraction filters are not relied on: they have had bypasses
(CVE-2024-12718, CVE-2025-4517).
"""

import errno
import gzip
import hashlib
import os
import stat
import tarfile

from ..errors import ImageError
from ..paths import remove_entry

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# Most uncompressed bytes one layer may hold (MINIRT_MAX_LAYER_BYTES overrides): a small
# gzip stream can expand to terabytes.
MAX_LAYER_BYTES = int(os.environ.get("MINIRT_MAX_LAYER_BYTES", 64 * 1024 ** 3))
# Fixed timestamp for files we pack ourselves, so the same input gives the same digest.
REPRODUCIBLE_MTIME = 946684800  # 2000-01-01
# The kernel's time_t is 64-bit seconds, uid_t and gid_t 32-bit (2**32-1 is chown's "no
# change"); a PAX header may say anything (mtime=1e400, nan, uid=2**70).
TIME_RANGE = 2 ** 63
MAX_ID = 2 ** 32 - 2


class HashingWriter:
    """A file wrapper that computes the sha256 and size of what passes through."""

    def __init__(self, raw):
        self.raw, self.sha, self.size = raw, hashlib.sha256(), 0

    def write(self, data):
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self):
        self.raw.flush()

    def close(self):
        pass


def pack_directory(source: str, out_path: str, reproducible: bool = True,
                   overlay_markers: bool = False, id_map=None) -> tuple[str, str, int]:
    """Write ``source``'s tree as a gzip-compressed layer at ``out_path``.

    ``reproducible``: every file owned by root with a fixed time, so the same
    files always give the same digest (how the busybox image is built).
    ``overlay_markers``: ``source`` is an overlayfs upper dir, whose deletions
    are 0/0 character devices and opaque directories an xattr; they become the
    OCI whiteouts ``.wh.NAME`` and ``.wh..wh..opq`` (how ``commit`` works).

    Returns ``(digest, diff_id, size)``: the sha256 of the compressed blob (how
    registries and manifests name it), the sha256 of the plain tar (how the
    image config names it) and the compressed size.

    ``id_map`` (a kernel.idmap.IdMapping): the files were made in a rootless
    container, so record owners as they were inside (the user's own uid is
    root there), not as the host sees them.
    """
    with open(out_path, "wb") as raw:
        compressed = HashingWriter(raw)
        with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, compresslevel=6) as gz:
            plain = HashingWriter(gz)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for info, path in layer_members(tar, source, overlay_markers):
                    if reproducible:
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        info.mtime = REPRODUCIBLE_MTIME
                    elif id_map is not None:
                        info.uid, info.gid = id_map.inside_uid(info.uid), id_map.inside_gid(info.gid)
                        info.uname = info.gname = ""
                    if info.isreg() and path is not None:
                        with open(path, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
    return ("sha256:" + compressed.sha.hexdigest(), "sha256:" + plain.sha.hexdigest(),
            compressed.size)


def layer_members(tar, source: str, overlay_markers: bool):
    """(TarInfo, path) for every entry below ``source``, sorted, parents first."""
    for directory, dirs, files in os.walk(source):
        dirs.sort()
        relative = os.path.relpath(directory, source)
        prefix = "" if relative == "." else relative + "/"
        if prefix:
            yield tar.gettarinfo(directory, arcname=relative), None
        if prefix and overlay_markers and is_opaque(directory):
            yield empty_member(prefix + OPAQUE_MARKER), None
        links = [d for d in dirs if os.path.islink(os.path.join(directory, d))]
        for name in sorted(files + links):
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if overlay_markers and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                yield empty_member(prefix + WHITEOUT_PREFIX + name), None
            else:
                yield tar.gettarinfo(path, arcname=prefix + name), path
        dirs[:] = [d for d in dirs if d not in links]


def empty_member(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = REPRODUCIBLE_MTIME
    return info


def is_opaque(directory: str) -> bool:
    """Did overlayfs mark this upper directory opaque (it replaced a lower one)?"""
    for attribute in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(directory, attribute, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def member_parts(name: str) -> list[str]:
    """Split a member name into path components, refusing any that could escape."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise ImageError(f"unsafe path in layer: {name!r} (absolute or containing '..')")
    if any(p.startswith(WHITEOUT_PREFIX) for p in parts[:-1]):
        raise ImageError(f"malformed layer path {name!r}: a whiteout is not a directory")
    return parts


def check_member(info: tarfile.TarInfo) -> None:
    """Refuse a member no layer needs and no file can have, before anything is written."""
    if info.issparse():
        # Go's archive/tar (docker, buildkit, containerd) never writes sparse members, and
        # tarfile hands their holes out as zeros that never pass the max_bytes cap.
        raise ImageError(f"layer member {info.name!r} is a GNU sparse file: not supported in "
                         "a layer (re-create the tar without --sparse)")
    if "\0" in info.name or "\0" in info.linkname:
        raise ImageError(f"layer member {info.name!r} has a NUL byte in its name or link target")
    if not -TIME_RANGE < info.mtime < TIME_RANGE:  # False for nan too
        raise ImageError(f"layer member {info.name!r} has an impossible time {info.mtime!r}")
    if not (0 <= info.uid <= MAX_ID and 0 <= info.gid <= MAX_ID):
        raise ImageError(f"layer member {info.name!r} has an impossible owner "
                         f"{info.uid}:{info.gid}")


def _open_dir(root_fd: int, parts: list[str], create: bool) -> int:
    """Open directory ``parts`` below ``root_fd`` without following any symlink."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ImageError(f"layer path goes through a symlink or file: "
                                     f"{'/'.join(parts)!r}") from None
                raise
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _set_metadata(fd: int | None, parent_fd: int, name: str, info: tarfile.TarInfo,
                  as_root: bool) -> None:
    if as_root:
        try:
            os.chown(name, info.uid, info.gid, dir_fd=parent_fd, follow_symlinks=False)
        except OSError:
            pass
    if fd is not None:
        os.fchmod(fd, permission_bits(info, as_root))
    try:
        os.utime(name, (info.mtime, info.mtime), dir_fd=parent_fd, follow_symlinks=False)
    except OSError:
        pass


def permission_bits(info: tarfile.TarInfo, as_root: bool) -> int:
    """The mode to give a file: setuid and setgid only when we unpack as root."""
    return info.mode & (0o7777 if as_root else 0o1777)


class _CappedReader:
    """Reads through to ``raw``, refusing to deliver more than ``limit`` bytes."""

    def __init__(self, raw, limit: int):
        self.raw, self.limit, self.seen = raw, limit, 0

    def read(self, n=-1):
        data = self.raw.read(n)
        self.seen += len(data)
        if self.seen > self.limit:
            raise ImageError(f"layer is larger than {self.limit} bytes uncompressed (a gzip "
                             "bomb?): refused")
        return data


def unpack(fileobj, dest: str, max_bytes: int = MAX_LAYER_BYTES) -> None:
    """Unpack a layer tar (plain or gzip) from ``fileobj`` into the directory ``dest``.

    Whiteouts become overlayfs whiteouts, so ``dest`` can serve directly as a
    lower dir of an overlay mount.
    """
    as_root = os.geteuid() == 0
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    directories = []  # (parts, info): directory modes are applied last, once they are filled
    created = set()   # paths this layer made: its own whiteouts may not hide them
    # Files of one directory come one after another in a tar: keep that directory
    # open. Any member that could change the tree's shape (a directory, a
    # whiteout, a replacement) closes it, so the next member walks from the root.
    parent = (None, -1)
    try:
        stream = _CappedReader(_decompressed(fileobj), max_bytes)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                check_member(info)
                parts = member_parts(info.name)
                if not parts:
                    if not info.isdir():
                        raise ImageError(f"layer member {info.name!r} would replace the layer's "
                                         "root (umoci CVE-2021-29136): refused")
                    continue
                simple = (info.isreg() or info.issym() or info.islnk()) and \
                    not parts[-1].startswith(WHITEOUT_PREFIX)
                if parent[0] != parts[:-1] or not simple:
                    if parent[1] >= 0:
                        os.close(parent[1])
                        parent = (None, -1)
                    parent = (parts[:-1], _open_dir(root_fd, parts[:-1], create=True))
                _unpack_member(tar, info, parts, parent[1], root_fd, as_root, directories,
                               created)
                if not simple:
                    os.close(parent[1])
                    parent = (None, -1)
        for parts, info in reversed(directories):
            fd = _open_dir(root_fd, parts, create=False)
            try:
                os.fchmod(fd, permission_bits(info, as_root))
            finally:
                os.close(fd)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"cannot unpack layer: {e}") from None
    finally:
        if parent[1] >= 0:
            os.close(parent[1])
        os.close(root_fd)


def _unpack_member(tar, info, parts, parent_fd, root_fd, as_root, directories, created) -> None:
    name = parts[-1]
    if name == OPAQUE_MARKER:
        _mark_opaque(parent_fd)
        return
    if name.startswith(WHITEOUT_PREFIX):
        hidden = name[len(WHITEOUT_PREFIX):]
        if not hidden or hidden in (".", "..") or "/" in hidden:
            raise ImageError(f"malformed whiteout in layer: {info.name!r}")
        if "/".join(parts[:-1] + [hidden]) in created:
            return  # a whiteout hides lower layers' files, not this layer's own
        remove_entry(parent_fd, hidden)
        os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent_fd)
        return
    created.add("/".join(parts))
    if info.isdir():
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                remove_entry(parent_fd, name)
                os.mkdir(name, 0o755, dir_fd=parent_fd)
        except FileNotFoundError:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
        _set_metadata(None, parent_fd, name, info, as_root)
        directories.append((parts, info))
        return
    remove_entry(parent_fd, name)
    if info.isreg():
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                     dir_fd=parent_fd)
        try:
            source = tar.extractfile(info)
            while chunk := source.read(1 << 20):
                os.write(fd, chunk)
            _set_metadata(fd, parent_fd, name, info, as_root)
        finally:
            os.close(fd)
    elif info.issym():
        os.symlink(info.linkname, name, dir_fd=parent_fd)
        _set_metadata(None, parent_fd, name, info, as_root)
    elif info.islnk():
        target = member_parts(info.linkname)
        if not target:
            raise ImageError(f"hard link to the layer root: {info.name!r}")
        target_fd = _open_dir(root_fd, target[:-1], create=False)
        try:
            if not stat.S_ISREG(os.stat(target[-1], dir_fd=target_fd,
                                        follow_symlinks=False).st_mode):
                raise ImageError(f"hard link {info.name!r} must point to a regular file, and "
                                 f"{info.linkname!r} is not one")
            os.link(target[-1], name, src_dir_fd=target_fd, dst_dir_fd=parent_fd,
                    follow_symlinks=False)
        except FileNotFoundError:
            raise ImageError(f"hard link {info.name!r} points to a missing file "
                             f"{info.linkname!r}") from None
        finally:
            os.close(target_fd)
    elif info.isfifo():
        os.mkfifo(name, info.mode & 0o777, dir_fd=parent_fd)
    # Character and block devices are skipped on purpose: a container gets its
    # devices from the runtime's minimal /dev, never from an image.


def _decompressed(fileobj):
    """The tar stream inside ``fileobj``: gunzipped when it starts with gzip's magic."""
    head = read_exactly(fileobj, 2) if hasattr(fileobj, "read") else b""
    rest = Prepend(head, fileobj)
    return gzip.GzipFile(fileobj=rest, mode="rb") if head == b"\x1f\x8b" else rest


def read_exactly(fileobj, n: int) -> bytes:
    """``n`` bytes (fewer only at the end): one read of a socket or a chunked HTTP body
    may return less than asked, even a single byte."""
    data = b""
    while len(data) < n:
        chunk = fileobj.read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class Prepend:
    """A reader that first returns ``head`` (bytes already read to sniff the format)."""

    def __init__(self, head: bytes, raw):
        self.head, self.raw = head, raw

    def read(self, n=-1):
        if self.head:
            if n < 0:
                data, self.head = self.head + self.raw.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            if len(data) < n:
                data += self.raw.read(n - len(data))
            return data
        return self.raw.read(n)


def _mark_opaque(dir_fd: int) -> None:
    """Tell overlayfs to hide everything lower layers have in this directory.

    ``trusted.*`` xattrs need CAP_SYS_ADMIN: without it, ``user.overlay.opaque``,
    which a rootless overlay (mounted with ``userxattr``) and ``is_opaque`` read."""
    try:
        os.setxattr(f"/proc/self/fd/{dir_fd}", "trusted.overlay.opaque", b"y")
    except PermissionError:
        os.setxattr(f"/proc/self/fd/{dir_fd}", "user.overlay.opaque", b"y")
