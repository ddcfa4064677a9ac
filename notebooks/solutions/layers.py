"""Reference solutions for notebook 5 (Layers)."""

import gzip
import hashlib
import os
import stat


def diff_id_of(tar_path):
    """sha256 of the *uncompressed* tar: gunzip first when the file is gzip'd."""
    with open(tar_path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    sha = hashlib.sha256()
    with (gzip.open if gzipped else open)(tar_path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def apply_whiteout(layer_dir, path):
    """Mark ``path`` deleted in ``layer_dir`` the way overlayfs does: a 0/0 char device."""
    target = os.path.join(layer_dir, path.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target):
        os.unlink(target)
    os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
