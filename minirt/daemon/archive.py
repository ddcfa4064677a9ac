"""``docker cp`` over the Engine API: files in and out of a container, as tar.

Docker concept: ``docker cp`` never copies files itself. ``docker cp
CONTAINER:/etc/hostname .`` asks ``GET /containers/{id}/archive?path=...`` for
a tar of that path and unpacks it; ``docker cp FILE CONTAINER:/tmp/`` first
asks ``HEAD`` what ``/tmp/`` is (the ``X-Docker-Container-Path-Stat`` header:
base64 JSON of name, size, Go file mode, mtime, link target), then sends a tar
with ``PUT`` to be extracted there.

Where the files are: a running minirt container's root filesystem (its overlay
and its volumes) is mounted only inside its own mount namespace, so the
daemon reaches it through ``/proc/PID1/root``, the kernel's handle on the root
directory the container's PID 1 sees. A stopped container has no such mount
any more: 409, honestly.

The path is untrusted, and so is everything inside the container: a symlink
the container made (``/tmp/up -> /``) must not lead the daemon, which runs on
the host as root, to the host's files (CVE-2018-15664, CVE-2019-14271 for
``docker cp``). So a path is resolved the way a chroot would resolve it:
``openat2(2)`` with ``RESOLVE_IN_ROOT`` (absolute symlinks and ``..`` stop at the
container's root) and ``RESOLVE_NO_MAGICLINKS`` (no ``/proc/N/root`` jumps),
or, on kernels before 5.6, the same walk done here one component at a time
with ``O_NOFOLLOW``. A path whose ``..`` climbs above ``/`` by itself is refused
(400) rather than quietly clamped. Below the resolved directory, tar members
are read and written relative to directory descriptors, never through a
symlink (the member rules of ``image/layer.py``: no absolute names, no ``..``).

Reference: Docker Engine API v1.43, ContainerArchive, ContainerArchiveInfo,
PutContainerArchive.
"""

import base64
import ctypes
import errno
import json
import os
import stat
import tarfile

from ..errors import ContainerError, ImageError
from ..image import layer
from .api import Reply, _find_container, iso_time, route
from .server import HTTPError

# openat2(2): the syscall number is the same on every architecture (new since 5.6).
SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
MAX_SYMLINKS = 40   # as the kernel's path walk (ELOOP after 40)

# Filesystems the tar of a directory does not descend into: the kernel's views
# (as dockerd, whose copy of a container's root never sees them mounted).
PSEUDO_FILESYSTEMS = {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs",
                      "tracefs", "securityfs", "pstore", "bpf", "binfmt_misc", "fusectl",
                      "configfs", "hugetlbfs", "autofs"}

_libc = ctypes.CDLL(None, use_errno=True)


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2) through ctypes; OSError with the kernel's errno (ENOSYS before 5.6)."""
    how = OpenHow(flags, 0, resolve)
    fd = _libc.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dir_fd), path.encode(),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        number = ctypes.get_errno()
        raise OSError(number, f"openat2 {path}: {os.strerror(number)}")
    return fd


# --- resolving a path inside the container ---------------------------------------------
def container_root(engine, ref: str) -> tuple[dict, int]:
    """The container and an O_PATH descriptor of its root directory (via its PID 1)."""
    container = _find_container(engine, ref)
    pid = (container.get("state") or {}).get("pid")
    if not container["running"] or not pid:
        raise ContainerError(
            f"container {container['name']} is not running: minirt reaches a container's files "
            "through its running PID 1, since its root filesystem is mounted only inside the "
            "container's mount namespace. Start it first")
    try:
        fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise ContainerError(f"container {container['name']} stopped meanwhile ({e.strerror})") \
            from None
    # The pid may have been reused if the container stopped just now: make sure it
    # is still a process of the container's cgroup (where there is one).
    procs = engine.cgroups.cgroup(container["id"]).procs() if engine.cgroups.version else [pid]
    if pid not in procs:
        os.close(fd)
        raise ContainerError(f"container {container['name']} is not running")
    return container, fd


def clean_parts(path: str) -> list[str]:
    """The path's components; 400 when its own ``..`` climbs above the container's root."""
    if not path:
        raise HTTPError(400, "give the path inside the container: ?path=/some/where")
    if "\0" in path:
        raise HTTPError(400, "the path contains a NUL byte")
    parts, depth = [], 0
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if depth == 0:
                raise HTTPError(400, f"path {path!r} climbs above the container's root "
                                "directory with '..': refused (a path is resolved inside the "
                                "container, never on the host)")
            depth -= 1
        else:
            depth += 1
        parts.append(part)
    return parts


def resolve(root_fd: int, path: str, follow_last: bool) -> int:
    """An O_PATH descriptor of ``path`` resolved as inside a chroot at ``root_fd``.

    ``follow_last``: a symlink as the last component is followed (else the
    descriptor is the link itself). Raises FileNotFoundError for a missing path.
    """
    parts = clean_parts(path)
    flags = os.O_PATH | os.O_CLOEXEC | (0 if follow_last else os.O_NOFOLLOW)
    for _ in range(16):
        try:
            return openat2(root_fd, "/".join(parts) or ".", flags,
                           RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        except OSError as e:
            if e.errno == errno.EAGAIN:
                continue  # a rename raced the walk: the kernel asks us to try again
            if e.errno in (errno.ENOSYS, errno.EPERM):
                break     # no openat2 here (or a seccomp filter hides it): walk ourselves
            raise _resolve_error(e, path) from None
    return _walk(root_fd, parts, follow_last, path)


def _resolve_error(error: OSError, path: str) -> Exception:
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return FileNotFoundError(errno.ENOENT, path)
    if error.errno == errno.ELOOP:
        return HTTPError(400, f"path {path!r} goes through too many symlinks, or through a "
                         "/proc magic link: refused")
    if error.errno == errno.EXDEV:
        return HTTPError(400, f"path {path!r} leads out of the container's root: refused")
    return error


def _walk(root_fd: int, parts: list[str], follow_last: bool, path: str) -> int:
    """The component-by-component fallback: O_NOFOLLOW at each step, symlinks read and
    resolved by us with the container's root as ``/`` (what RESOLVE_IN_ROOT does)."""
    stack = [os.dup(root_fd)]          # the directories walked through; [0] is the root
    pending = list(parts)
    hops = 0
    try:
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            try:
                fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            except OSError as e:
                raise _resolve_error(e, path) from None
            if stat.S_ISLNK(os.fstat(fd).st_mode) and (pending or follow_last):
                hops += 1
                try:
                    target = os.readlink(part, dir_fd=stack[-1])
                finally:
                    os.close(fd)
                if hops > MAX_SYMLINKS:
                    raise _resolve_error(OSError(errno.ELOOP, "loop"), path)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                pending = target.split("/") + pending
                continue
            if pending and not stat.S_ISDIR(os.fstat(fd).st_mode):
                os.close(fd)
                raise FileNotFoundError(errno.ENOTDIR, path)
            stack.append(fd)
        return stack.pop() if len(stack) > 1 else os.dup(stack[0])
    finally:
        for fd in stack:
            os.close(fd)


# --- the stat header -----------------------------------------------------------------
GO_MODE_BITS = ((stat.S_ISUID, 1 << 23), (stat.S_ISGID, 1 << 22), (stat.S_ISVTX, 1 << 20))
GO_TYPE_BITS = {stat.S_IFDIR: 1 << 31, stat.S_IFLNK: 1 << 27, stat.S_IFIFO: 1 << 25,
                stat.S_IFSOCK: 1 << 24, stat.S_IFBLK: 1 << 26,
                stat.S_IFCHR: (1 << 26) | (1 << 21)}


def go_file_mode(mode: int) -> int:
    """A Unix st_mode as Go's os.FileMode (what the docker CLI decodes: ``IsDir()``...)."""
    value = stat.S_IMODE(mode) & 0o777
    for unix, go in GO_MODE_BITS:
        if mode & unix:
            value |= go
    return value | GO_TYPE_BITS.get(stat.S_IFMT(mode), 0)


def path_stat(fd: int, path: str) -> dict:
    st = os.fstat(fd)
    parts = clean_parts(path)
    name = parts[-1] if parts else "/"
    target = ""
    if stat.S_ISLNK(st.st_mode):
        target = _readlink_fd(fd)
    return {"name": name, "size": st.st_size, "mode": go_file_mode(st.st_mode),
            "mtime": iso_time(st.st_mtime), "linkTarget": target}


def _readlink_fd(fd: int) -> str:
    """readlinkat(fd, ""): the target of a symlink opened with O_PATH|O_NOFOLLOW."""
    buffer = ctypes.create_string_buffer(4096)
    size = _libc.readlinkat(ctypes.c_int(fd), b"", buffer, ctypes.c_size_t(len(buffer)))
    if size < 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return buffer.raw[:size].decode(errors="surrogateescape")


def stat_header(info: dict) -> str:
    return base64.b64encode(json.dumps(info).encode()).decode()


def _opened(request, ref: str, follow_last: bool):
    engine = request.daemon.engine
    path = request.arg("path")
    clean_parts(path or "")
    container, root_fd = container_root(engine, ref)
    try:
        try:
            fd = resolve(root_fd, path, follow_last)
        except FileNotFoundError:
            raise HTTPError(404, f"Could not find the file {path} in container "
                            f"{container['name']}") from None
    finally:
        os.close(root_fd)
    return container, path, fd


def _follows_last(path: str) -> bool:
    # docker's rule: "dir/" and "dir/." mean the directory a symlink points to
    return path.endswith("/") or path.endswith("/.")


# --- GET and HEAD: a tar of a path ----------------------------------------------------
@route("HEAD", r"/containers/(?P<ref>[^/]+)/archive")
def archive_head(request, ref):
    """What the path is (the stat header only): ``docker cp`` asks before copying."""
    path = request.arg("path") or ""
    _, path, fd = _opened(request, ref, _follows_last(path))
    try:
        info = path_stat(fd, path)
    finally:
        os.close(fd)
    return Reply(200, body=b"", content_type=None,
                 headers={"X-Docker-Container-Path-Stat": stat_header(info)})


@route("GET", r"/containers/(?P<ref>[^/]+)/archive")
def archive_get(request, ref):
    """A tar of the path (a file, or a directory with everything below it)."""
    path = request.arg("path") or ""
    container, path, fd = _opened(request, ref, _follows_last(path))
    try:
        info = path_stat(fd, path)
        skip = _pseudo_devices(container["state"]["pid"])
        headers = {"X-Docker-Container-Path-Stat": stat_header(info)}
        with request.json_stream(200, "application/x-tar", headers=headers) as out:
            writer = _Writer(out)
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                name = info["name"] if info["name"] != "/" else "."
                _add(tar, fd, name, skip)
            writer.flush()  # tarfile leaves a file object it was given open and unflushed
    finally:
        os.close(fd)


class _Writer:
    """tarfile's output, sent as chunks of the HTTP response (64 KiB at a time)."""

    def __init__(self, stream):
        self.stream, self.buffer = stream, bytearray()

    def write(self, data) -> int:
        self.buffer += data
        if len(self.buffer) >= 65536:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buffer:
            self.stream.write(bytes(self.buffer))
            self.buffer.clear()

    def close(self) -> None:
        self.flush()


def _pseudo_devices(pid: int) -> set[int]:
    """st_dev of the container's /proc, /sys, cgroup and similar mounts (mountinfo)."""
    found = set()
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            for line in f:
                fields = line.split()
                fstype = fields[fields.index("-") + 1]
                if fstype in PSEUDO_FILESYSTEMS:
                    major, minor = fields[2].split(":")
                    found.add(os.makedev(int(major), int(minor)))
    except (OSError, ValueError, IndexError):
        pass
    return found


def _add(tar, fd: int, name: str, skip: set[int]) -> None:
    """Add the file open at ``fd`` (O_PATH, not followed) as ``name``, and what is below."""
    st = os.fstat(fd)
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
    info.mtime = int(st.st_mtime)
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFREG:
        info.type, info.size = tarfile.REGTYPE, st.st_size
        with os.fdopen(os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC), "rb") as f:
            tar.addfile(info, _Exactly(f, st.st_size))
        return
    if kind == stat.S_IFLNK:
        info.type, info.linkname = tarfile.SYMTYPE, _readlink_fd(fd)
    elif kind == stat.S_IFDIR:
        info.type = tarfile.DIRTYPE
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        info.type = tarfile.CHRTYPE if kind == stat.S_IFCHR else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif kind == stat.S_IFIFO:
        info.type = tarfile.FIFOTYPE
    else:
        return  # a socket: nothing a tar can hold
    tar.addfile(info)
    if kind != stat.S_IFDIR or st.st_dev in skip:
        return
    directory = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for entry in sorted(os.listdir(directory)):
            try:
                child = os.open(entry, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
            except FileNotFoundError:
                continue  # removed while we read
            try:
                _add(tar, child, f"{name}/{entry}", skip)
            finally:
                os.close(child)
    finally:
        os.close(directory)


class _Exactly:
    """A file cut (or zero-padded) to the size announced in its tar header."""

    def __init__(self, raw, size: int):
        self.raw, self.left = raw, size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.raw.read(n) or b"\0" * n  # the file shrank while we read: pad
        self.left -= len(data)
        return data


# --- PUT: extract a tar into a directory ----------------------------------------------
@route("PUT", r"/containers/(?P<ref>[^/]+)/archive", raw_body=True)
def archive_put(request, ref):
    """Extract the request's tar (plain, gzip, bzip2 or xz) into the directory ``path``."""
    container, path, fd = _opened(request, ref, follow_last=True)
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise HTTPError(400, f"extraction point {path} is not a directory")
        directory = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        os.close(fd)
    try:
        extract(request.body_reader(None), directory)
    except ImageError as e:
        raise HTTPError(400, f"refused to extract into {container['name']}:{path}: {e}") from None
    except (tarfile.TarError, EOFError) as e:
        raise HTTPError(400, f"the request body is not a readable tar: {e}") from None
    finally:
        os.close(directory)
    return Reply(200, body=b"", content_type=None)


def extract(fileobj, root_fd: int) -> None:
    """Unpack a tar below ``root_fd`` with ``image/layer.py``'s member rules.

    Unlike a layer, a copy has no whiteouts: a member named ``.wh.*`` is refused
    rather than turned into a deletion. Directory modes are set last, once filled.
    """
    as_root = os.geteuid() == 0
    directories, created = [], set()
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for info in tar:
            parts = layer.member_parts(info.name)   # no absolute names, no ".."
            if not parts:
                continue  # "." itself: the extraction directory exists already
            if any(p.startswith(layer.WHITEOUT_PREFIX) for p in parts):
                raise ImageError(f"member {info.name!r}: names starting with "
                                 f"{layer.WHITEOUT_PREFIX!r} are not supported by minirt")
            if info.islnk():
                info.linkname = "/".join(layer.member_parts(info.linkname))
            parent = layer._open_dir(root_fd, parts[:-1], create=True)  # never via a symlink
            try:
                layer._unpack_member(tar, info, parts, parent, root_fd, as_root, directories,
                                     created)
            finally:
                os.close(parent)
    for parts, info in reversed(directories):
        fd = layer._open_dir(root_fd, parts, create=False)
        try:
            os.fchmod(fd, layer.permission_bits(info, as_root))
        finally:
            os.close(fd)
