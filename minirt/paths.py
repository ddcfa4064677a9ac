"""Where minirt keeps its state on disk.

Layout under the state root (``/var/lib/minirt`` as root, ``$XDG_DATA_HOME/minirt``
otherwise, ``$MINIRT_ROOT`` when set)::

    images/        an OCI image layout: oci-layout, index.json, blobs/sha256/<hex>
    layers/<hex>/  each layer unpacked once, named by its diff_id (sha256 of the tar)
    containers/<id>/
        config.json  the container's spec, as given to ``run``/``create``
        state.json   status, pid, exit code, OOMKilled (written atomically)
        upper/ work/ overlayfs upper and work dirs: the container's own changes
        rootfs/      mount point of the merged root (or a full copy without overlayfs)
"""

import os
import tempfile


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
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
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
