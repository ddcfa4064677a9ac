"""Exercise 05: unpack one layer of an image into a directory, whiteouts and all.

minirt calls your ``apply_layer`` the first time it needs a layer on disk
(``ImageStore.ensure_unpacked`` in minirt/image/store.py: before a container
starts, a build copies into the image, or ``minirt init`` makes busybox). The
directory you fill becomes ``layers/<diff_id>/`` in the store, one lower
directory of the container's overlay mount (or, with no overlayfs, one of the
directories ``runtime/rootfs.copy_layers`` merges by copying). After you
return, minirt reads what is left of the stream and checks that the sha256 of
the whole tar is the layer's diff_id.

Everything in a layer comes from whoever made the image: treat it as hostile.
"""

import os  # noqa: F401  (os.mknod, os.makedev, os.symlink, os.link, os.setxattr, ...)
import stat  # noqa: F401  (stat.S_IFCHR)
import tarfile

from minirt.errors import ImageError  # noqa: F401  (what minirt prints as one line)

WHITEOUT_PREFIX = ".wh."          # ".wh.NAME": NAME was deleted by this layer
OPAQUE_MARKER = ".wh..wh..opq"    # in a directory: hide all that lower layers have in it


def apply_layer(fileobj, dest: str, max_bytes: int) -> None:
    """Unpack the layer tar read from ``fileobj`` into the empty directory ``dest``.

    ``fileobj`` is a stream (uncompressed tar, ``read()`` only: no seek), so
    open it with ``tarfile.open(fileobj=fileobj, mode="r|")`` and take the
    members in order. ``dest`` exists and is empty. Return None when done.

    What each member becomes below ``dest`` (OCI image-spec, layer.md):

    * a directory: a directory (it may already exist: keep it);
    * a regular file: a file with the member's content and permission bits
      (``member.mode & 0o1777``; setuid/setgid only when running as root);
    * a symbolic link: a symlink whose target is ``member.linkname``, as is;
    * a hard link: a second name for the file ``member.linkname`` (a path
      inside the layer, written earlier in this same tar);
    * ``DIR/.wh.NAME`` (a whiteout): NAME was deleted. Write what overlayfs
      reads as "deleted": a character device numbered 0/0 at ``DIR/NAME``
      (Linux lets any user make that one device);
    * ``DIR/.wh..wh..opq`` (the opaque marker): DIR hides everything lower
      layers have in it. Set the extended attribute ``trusted.overlay.opaque``
      to ``b"y"`` on DIR; only root may set ``trusted.*``, so when that raises
      PermissionError set ``user.overlay.opaque`` instead (what an overlay
      mounted with ``userxattr`` reads, and minirt's copy fallback too);
    * ``./`` (the layer's root): nothing to do; device nodes and fifos: skip them.

    Neither ``.wh.`` name itself ever appears in ``dest``.

    Refuse, by raising ``ImageError("...")`` (minirt prints its message as
    one line), a layer that would write outside ``dest``: a member whose name
    is absolute (``/etc/passwd``) or contains ``..`` (``../../etc/passwd``), or
    whose parent directory resolves, through a symlink planted earlier in the
    layer, to somewhere outside ``dest``. Also refuse one whose files add up to
    more than ``max_bytes`` (a small gzip stream can expand to terabytes).
    """
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for member in tar:
            # TODO 1: split member.name into parts (drop "" and "."), and refuse an
            #         absolute name or a ".." part with ImageError.
            # TODO 2: find the parent directory's real path (os.path.realpath follows
            #         symlinks already on disk) and refuse it unless it is dest or below
            #         (os.path.commonpath([dest, real]) == dest, dest itself made real too);
            #         then create it (os.makedirs(..., exist_ok=True)).
            # TODO 3: the two special names: OPAQUE_MARKER (os.setxattr on the parent) and
            #         WHITEOUT_PREFIX + NAME (remove what is at NAME, then
            #         os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))).
            # TODO 4: member.isdir(), isreg() (count member.size against max_bytes; copy
            #         tar.extractfile(member) into the file; os.chmod), issym()
            #         (os.symlink), islnk() (os.link from dest/linkname). Replace whatever a
            #         lower member left at that path, unless a directory meets a directory.
            raise NotImplementedError(f"apply_layer: what should {member.name!r} become? "
                                      "(see the TODOs in apply_layer.py)")
