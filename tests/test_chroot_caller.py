"""minirt keeps working when minirt itself runs inside a chroot (build roots, some CI).

pivot_root and MS_PRIVATE on "/" refuse to work from a chroot, whose root is
not a mount point; the runtime steps out to its mount namespace's real root for
those two calls (``mounts.leave_chroot``) and isolates the container as usual.
"""

import os
import sys

from conftest import CGROUP_PARENT
from minirt.kernel import mounts, namespaces, syscalls

SYSTEM_DIRS = ("usr", "lib", "lib64", "bin", "sbin", "etc", "dev", "sys")


def test_run_from_inside_a_chroot(engine, state_root, tmp_path):
    jail = tmp_path / "jail"
    project = os.path.dirname(os.path.dirname(os.path.abspath(mounts.__file__)))
    shared = [d for d in SYSTEM_DIRS if os.path.isdir("/" + d)]
    shared += [p.lstrip("/") for p in {project, sys.prefix, state_root}]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_fd)
            namespaces.unshare(["mnt"])  # our bind mounts vanish with this child
            mounts.make_private("/")
            for path in shared:
                os.makedirs(jail / path, exist_ok=True)
                mounts.bind("/" + path, str(jail / path))
            os.makedirs(jail / "proc")
            syscalls.mount("proc", str(jail / "proc"), "proc")
            os.makedirs(jail / "tmp")
            os.chroot(jail)
            os.chdir("/")
            os.dup2(write_fd, 1)
            os.dup2(write_fd, 2)
            os.execve(sys.executable, [sys.executable, "-m", "minirt", "run", "--rm", "-h", "jailed",
                                       "busybox", "sh", "-c", "hostname; ls /; exit 5"],
                      {**os.environ, "MINIRT_ROOT": state_root, "MINIRT_CGROUP_PARENT": CGROUP_PARENT,
                       "PYTHONPATH": project})
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        output = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 5, output
    lines = output.split()
    assert lines[0] == "jailed"
    assert "linuxrc" in lines and "work" not in lines, "the container sees busybox's root"
