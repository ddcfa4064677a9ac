"""Where minirt keeps its state on disk.

Layout under the state root (``/var/lib/minirt`` as root, ``$XDG_DATA_HOME/minirt``
otherwise, ``$MINIRT_ROOT`` when set)::

    images/        an OCI image layout: oci-layout, index.json, blobs/sha256/<hex>
    layers/<hex>/  each layer unpacked once, named by its diff_id (sha256 of the tar)
    containers/<id>/
        config.json  the container's spec, as given to ``run``/``create``
        state.json   status, pid, exit code, OOMKilled, started/finished at (atomic)
        <id>-json.log  its output, docker's json-file format (runtime/jsonlog.py)
        attach.sock control.sock shim.log   a detached container's shim (runtime/shim.py)
        upper/ work/ overlayfs upper and work dirs: the container's own changes
        rootfs/      mount point of the merged root (or a full copy without overlayfs)
    images/sources.json  which remote repositories hold each blob (for cross-repo mounts)
    networks/<name>.json  a bridge network: subnet, gateway, bridge, leases (network/ipam.py)
    registry/      the lab's local registry (``minirt registry start``): config.yml,
                   data/ (its storage), registry.log, registry.json (its pid record)
    vm/vmlinuz     the kernel the VM baseline boots (scripts/fetch-vm-kernel)

Logins (``minirt login``) are per user, not per state root: ``$MINIRT_CONFIG``
or ``~/.config/minirt/auth.json`` (see minirt/registry/auth.py).
"""

import os
import stat


def state_root() -> str:
    """The state directory for this user (created on first use)."""
    root = os.environ.get("MINIRT_ROOT")
    if not root:
        if os.geteuid() == 0:
            root = "/var/lib/minirt"
        else:
            data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
            root = os.path.join(data, "minirt")
    return os.path.abspath(root)


def atomic_write(path: str, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``data`` so that readers see the old file or the new one, never half.

    The bytes go to a temp file in the same directory and ``rename(2)`` replaces
    the target in one step. ``durable`` also fsyncs first, so the new content
    survives a power cut (worth it for image data, not for a container's status).
    """
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def remove_entry(dir_fd: int, name: str) -> None:
    """Remove ``name`` inside the directory ``dir_fd``: a file, a link or a whole tree.

    Works through directory file descriptors and never follows a symlink, so a
    link planted inside the tree cannot make us delete anything outside it.
    Entries that vanish meanwhile (another process removing the same tree, e.g.
    a shim cleaning up after ``--rm``) are fine: gone is what we want.
    """
    try:
        _remove_entry(dir_fd, name)
    except FileNotFoundError:
        pass


def _remove_entry(dir_fd: int, name: str) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        try:
            sub = os.open(name, flags, dir_fd=dir_fd)
        except PermissionError:  # e.g. overlayfs leaves work/work as mode 000
            os.chmod(name, 0o700, dir_fd=dir_fd)
            sub = os.open(name, flags, dir_fd=dir_fd)
        try:
            for child in os.listdir(sub):
                remove_entry(sub, child)
        finally:
            os.close(sub)
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def remove_tree(path: str) -> None:
    """``rm -rf path``, without following symlinks (see ``remove_entry``).

    A rootless container with subordinate ids leaves files owned by borrowed
    host ids, which only root of a user namespace with the same map may
    delete: on EACCES an ordinary user retries there (kernel/idmap.py).
    """
    try:
        _remove_tree(path)
    except PermissionError:
        if os.geteuid() == 0:
            raise
        from .kernel import idmap
        mapping = idmap.for_user()
        if not mapping.subordinate:
            raise
        idmap.run_mapped(lambda: _remove_tree(path), mapping)


def _remove_tree(path: str) -> None:
    parent, name = os.path.split(os.path.abspath(path))
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        remove_entry(fd, name)
    finally:
        os.close(fd)


class FileLock:
    """An exclusive flock(2) on ``path`` for the duration of a ``with`` block, between
    processes (the image index, the networks' leases). ``prepare()`` runs first
    (e.g. to create the directory)."""

    def __init__(self, path: str, prepare=lambda: None):
        self.path, self.prepare, self.file = path, prepare, None

    def __enter__(self):
        import fcntl
        self.prepare()
        self.file = open(self.path, "w")
        fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.file.close()  # closing releases the lock
        return False
