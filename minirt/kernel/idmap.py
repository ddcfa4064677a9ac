"""Subordinate ids: a rootless container with 65536 users inside, not just one.

An ordinary user may map only its own uid into a new user namespace (``0 UID 1``,
see namespaces.map_to_root): inside there is root and nobody else, so an image
that ``chown``s a file to uid 1000 fails. The administrator can lend each user a
range of host ids nobody else uses, in ``/etc/subuid`` and ``/etc/subgid``
(``alice:100000:65536``). The setuid helpers ``newuidmap(1)`` and ``newgidmap(1)``
(Debian package ``uidmap``) check that file and write a bigger map for the
user's process from outside the namespace::

    0       1000     1        inside root is the user
    1       100000   65536    inside 1..65536 are the borrowed ids

Podman and rootless Docker work this way. Files a container makes as uid 1000
belong to host uid 100999 afterwards, which the user cannot delete directly:
``run_mapped`` does such work as root of a namespace with the same map
(``podman unshare``). Man pages: user_namespaces(7), newuidmap(1), subuid(5).
"""

import os
import shutil

from ..record import Record
from . import namespaces

SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"


class IdMapping(Record):
    """How a rootless user's ids appear inside its user namespaces."""

    __slots__ = ("uid", "gid", "uid_range", "gid_range")

    def __init__(self, uid: int, gid: int, uid_range=None, gid_range=None):
        self.uid, self.gid = uid, gid
        self.uid_range = uid_range    # (first host id, count) from /etc/subuid, or None
        self.gid_range = gid_range

    @property
    def subordinate(self) -> bool:
        return self.uid_range is not None and self.gid_range is not None

    def inside_uid(self, host_uid: int) -> int:
        """What a file's host uid reads as inside (stat(2) in the namespace does the same)."""
        return _inside(host_uid, self.uid, self.uid_range)

    def inside_gid(self, host_gid: int) -> int:
        return _inside(host_gid, self.gid, self.gid_range)

    def uid_map(self) -> str:
        return _map_lines(self.uid, self.uid_range)

    def gid_map(self) -> str:
        return _map_lines(self.gid, self.gid_range)


OVERFLOW_ID = 65534   # what an id with no mapping reads as (/proc/sys/kernel/overflowuid)


def _inside(host_id: int, own: int, borrowed) -> int:
    if host_id == own:
        return 0
    if borrowed and borrowed[0] <= host_id < borrowed[0] + borrowed[1]:
        return 1 + host_id - borrowed[0]
    return OVERFLOW_ID


def _map_lines(own: int, borrowed) -> str:
    lines = f"0 {own} 1"
    if borrowed:
        lines += f"\n1 {borrowed[0]} {borrowed[1]}"
    return lines


def for_user(uid: int | None = None, gid: int | None = None) -> IdMapping:
    """The mapping this user gets: with subordinate ranges when ``uidmap`` is
    installed and both /etc/subuid and /etc/subgid lend this user ids."""
    uid = os.geteuid() if uid is None else uid
    gid = os.getegid() if gid is None else gid
    if not (shutil.which("newuidmap") and shutil.which("newgidmap")):
        return IdMapping(uid, gid)
    return IdMapping(uid, gid, subordinate_range(SUBUID, uid), subordinate_range(SUBGID, uid))


def subordinate_range(path: str, uid: int) -> tuple[int, int] | None:
    """The first ``NAME_OR_UID:START:COUNT`` line of ``path`` for this user (subuid(5))."""
    import pwd
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    try:
        with open(path) as f:
            for line in f:
                owner, _, rest = line.strip().partition(":")
                start, _, count = rest.partition(":")
                if owner in (name, str(uid)) and start.isdigit() and count.isdigit() \
                        and int(count) > 0:
                    return int(start), int(count)
    except OSError:
        pass
    return None


def write_maps(pid: int, mapping: IdMapping) -> None:
    """Have newuidmap/newgidmap write ``pid``'s maps (run from outside its namespace)."""
    import subprocess
    for tool, own, borrowed in (("newuidmap", mapping.uid, mapping.uid_range),
                                ("newgidmap", mapping.gid, mapping.gid_range)):
        done = subprocess.run([tool, str(pid), "0", str(own), "1", "1", str(borrowed[0]),
                               str(borrowed[1])], capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(f"{tool} refused: {done.stderr.strip() or done.returncode} "
                          f"(check /etc/subuid and /etc/subgid)")


def unshare_mapped(names: list[str], mapping: IdMapping) -> None:
    """unshare(``names``, a user namespace among them), then become root inside it
    with ``mapping``: the borrowed ranges through a helper outside, else our own ids."""
    if not mapping.subordinate:
        namespaces.unshare(names)
        namespaces.map_to_root(mapping.uid, mapping.gid)
        return
    me = os.getpid()
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    helper = os.fork()
    if helper == 0:   # stays outside the new namespace: newuidmap needs that
        code = 1
        try:
            os.close(ready_w)
            os.close(done_r)
            if os.read(ready_r, 1) == b"1":
                write_maps(me, mapping)
                code = 0
        except BaseException as e:
            os.write(done_w, str(e).encode()[:500])
        finally:
            os._exit(code)
    os.close(ready_r)
    os.close(done_w)
    try:
        namespaces.unshare(names)
        os.write(ready_w, b"1")
    finally:
        os.close(ready_w)
        why = os.read(done_r, 600).decode()
        os.close(done_r)
        _, status = os.waitpid(helper, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(why or "could not write the uid/gid maps")


def run_mapped(action, mapping: IdMapping | None = None) -> None:
    """Run ``action()`` as root of a new user namespace with this user's mapping
    (``podman unshare``), in a child process; raise OSError if it fails."""
    mapping = mapping or for_user()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(err_r)
            unshare_mapped(["user"], mapping)
            action()
            code = 0
        except BaseException as e:
            os.write(err_w, f"{e.__class__.__name__}: {e}".encode()[:1000])
        finally:
            os._exit(code)
    os.close(err_w)
    with os.fdopen(err_r, "rb") as f:
        why = f.read().decode()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(why or "failed in the user namespace")
