"""``minirt import``: a flat root filesystem tarball becomes a one-layer image.

The tar is unpacked with the same safe unpacker as any layer (it is untrusted
input), checked, and packed again as a layer, so the stored blob is exactly
what its digest says.
"""

import shutil
import tempfile

from . import layer as layers
from .store import Image, ImageStore


def import_rootfs_tar(store: ImageStore, source, name: str, run_config: dict | None = None) -> Image:
    """Import ``source`` (a path or a binary file object) as image ``name``."""
    store.ensure_layout()
    workspace = tempfile.mkdtemp(dir=store.root, prefix=".import-")
    try:
        if isinstance(source, str):
            with open(source, "rb") as f:
                layers.unpack(f, workspace)
        else:
            layers.unpack(source, workspace)
        return store.add_rootfs(workspace, name, run_config or {}, created_by="minirt import")
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
