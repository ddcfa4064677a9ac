"""Reference solution of exercise 05: a layer unpacked, whiteouts and all, refusing escapes."""

import os
import shutil
import stat
import tarfile

from minirt.errors import ImageError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


def apply_layer(fileobj, dest: str, max_bytes: int) -> None:
    """Unpack the layer tar stream ``fileobj`` into the directory ``dest`` (see starter.py)."""
    dest = os.path.realpath(dest)
    as_root = os.geteuid() == 0
    directories = []  # (path, mode): applied last, or a read-only directory stops its own files
    total = 0
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for member in tar:
            parts = safe_parts(member.name)
            if not parts:
                continue  # "./": the layer's root, which is dest itself
            parent = inside(dest, os.path.join(dest, *parts[:-1]), member.name)
            os.makedirs(parent, exist_ok=True)
            name = parts[-1]
            path = os.path.join(parent, name)
            if name == OPAQUE_MARKER:
                mark_opaque(parent)
            elif name.startswith(WHITEOUT_PREFIX):
                hidden = name[len(WHITEOUT_PREFIX):]
                if hidden in ("", ".", ".."):
                    raise ImageError(f"malformed whiteout in layer: {member.name!r}")
                remove(os.path.join(parent, hidden))
                os.mknod(os.path.join(parent, hidden), stat.S_IFCHR | 0o000, os.makedev(0, 0))
            elif member.isdir():
                if not os.path.isdir(path) or os.path.islink(path):
                    remove(path)
                    os.mkdir(path, 0o700)
                directories.append((path, member.mode))
            elif member.isreg():
                total += member.size
                if total > max_bytes:
                    raise ImageError(f"layer is larger than {max_bytes} bytes uncompressed: "
                                     "refused")
                remove(path)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(tar.extractfile(member), out)
                os.chmod(path, member.mode & (0o7777 if as_root else 0o1777))
            elif member.issym():
                remove(path)
                os.symlink(member.linkname, path)
            elif member.islnk():
                target = os.path.join(dest, *safe_parts(member.linkname))
                target = os.path.join(inside(dest, os.path.dirname(target), member.name),
                                      os.path.basename(target))
                if not os.path.isfile(target) or os.path.islink(target):
                    raise ImageError(f"hard link {member.name!r} must point to a file already "
                                     f"in the layer, and {member.linkname!r} is not one")
                remove(path)
                os.link(target, path, follow_symlinks=False)
            else:
                continue  # devices and fifos: a container gets its /dev from the runtime
            if as_root and not name.startswith(WHITEOUT_PREFIX):
                os.lchown(path, member.uid, member.gid)
    for path, mode in reversed(directories):
        os.chmod(path, mode & (0o7777 if as_root else 0o1777))


def safe_parts(name: str) -> list[str]:
    """The member's path components; an absolute path or a '..' is refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise ImageError(f"unsafe path in layer: {name!r} (absolute or containing '..')")
    return parts


def inside(dest: str, directory: str, name: str) -> str:
    """``directory`` with its symlinks resolved, refused unless it is still below ``dest``."""
    real = os.path.realpath(directory)
    if os.path.commonpath([dest, real]) != dest:
        raise ImageError(f"layer path {name!r} goes through a symlink out of the layer")
    return real


def remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def mark_opaque(directory: str) -> None:
    """overlayfs' opaque mark: trusted.* as root, user.* (the userxattr mount option) otherwise."""
    try:
        os.setxattr(directory, "trusted.overlay.opaque", b"y", follow_symlinks=False)
    except PermissionError:
        os.setxattr(directory, "user.overlay.opaque", b"y", follow_symlinks=False)
