"""The lab's default image, ``busybox:latest``, built offline from the host's busybox.

BusyBox is one static binary that acts as ``sh``, ``ls``, ``ps``, ``httpd`` and
300 other tools, chosen by the name it is called under (argv[0]). Put it in
``/bin``, add a link per tool and a few files in ``/etc``, and it is a complete
root filesystem: the same idea as Docker Hub's busybox image, made here with no
network. It must be *static*: a dynamically linked binary would need the host's
shared libraries inside the container too.
"""

import os
import shutil
import struct
import subprocess
import tempfile

from ..errors import KernelFeatureMissing
from .store import Image, ImageStore

CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
DEFAULT_NAME = "busybox:latest"
PT_INTERP = 3

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
tty:x:5:
nogroup:x:65534:
"""


def is_static_elf(path: str) -> bool:
    """True when the ELF file at ``path`` asks for no dynamic loader (no PT_INTERP)."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit ELF only
            return False
        endian = "<" if header[5] == 1 else ">"
        phoff, = struct.unpack_from(endian + "Q", header, 32)
        phentsize, phnum = struct.unpack_from(endian + "HH", header, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            kind, = struct.unpack(endian + "I", f.read(4))
            if kind == PT_INTERP:
                return False
    return True


def find_static_busybox() -> str | None:
    for path in CANDIDATES:
        if os.path.isfile(path) and is_static_elf(path):
            return path
    return None


def make_rootfs(rootfs: str, busybox: str) -> None:
    """Lay out a minimal Linux root filesystem around ``busybox`` in ``rootfs``."""
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home", "var/log",
                      "proc", "sys", "dev", "run", "mnt"):
        os.makedirs(os.path.join(rootfs, directory), exist_ok=True)
    os.makedirs(os.path.join(rootfs, "tmp"))
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    os.chmod(os.path.join(rootfs, "root"), 0o700)
    shutil.copy(busybox, os.path.join(rootfs, "bin", "busybox"))
    os.chmod(os.path.join(rootfs, "bin", "busybox"), 0o755)
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        path = os.path.join(rootfs, applet)
        if not os.path.lexists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink("/bin/busybox", path)
    files = {"etc/passwd": PASSWD, "etc/group": GROUP, "etc/hostname": "busybox\n",
             "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n"}
    for name, text in files.items():
        with open(os.path.join(rootfs, name), "w") as f:
            f.write(text)


def build(store: ImageStore, name: str = DEFAULT_NAME) -> Image:
    """Build ``busybox:latest`` into ``store`` from the host's static busybox."""
    busybox = find_static_busybox()
    if busybox is None:
        raise KernelFeatureMissing("no static busybox found (looked in "
                                   f"{', '.join(CANDIDATES)}): install the Debian package "
                                   "busybox-static (`make setup` does it as root)")
    with tempfile.TemporaryDirectory(prefix="minirt-busybox-") as rootfs:
        make_rootfs(rootfs, busybox)
        return store.add_rootfs(rootfs, name, {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
        }, created_by=f"minirt: busybox rootfs from the host's {busybox}")


def ensure(store: ImageStore, name: str = DEFAULT_NAME) -> Image:
    """Return the default image, building it first when the store lacks it."""
    try:
        return store.resolve(name)
    except Exception:
        return build(store, name)
