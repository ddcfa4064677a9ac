"""Emulation for machines that allow no namespaces at all: ``proot`` (man 1 proot).

Binder and many course servers give students an ordinary uid and refuse new
namespaces (``max_user_namespaces=0``, or a seccomp policy). There is no real
container to be had there. proot fakes the part that matters for a lesson on
images: it traces the command with ptrace(2) and rewrites every path it uses so
that the image's files appear as ``/``. Nothing is isolated: the command sees
the host's processes, network and hostname, and is not limited. minirt says so
every time it uses it ("not isolated: proot emulation").
"""

import os
import shutil
import subprocess

from ..errors import CommandNotFound
from ..kernel import rlimits
from . import rootfs
from .init import DEFAULT_PATH, container_env
from .spec import ExitStatus

LABEL = "not isolated: proot emulation (this machine allows no namespaces)"


def proot_path() -> str | None:
    return shutil.which("proot")


def find_in_image(root: str, name: str, path: str) -> str:
    """The command's path as the image sees it (proot wants a path, not a PATH search)."""
    candidates = [name] if "/" in name else [f"{d or '/'}/{name}".replace("//", "/")
                                             for d in path.split(":")]
    for candidate in candidates:
        if os.path.lexists(os.path.join(root, candidate.lstrip("/"))):
            return candidate
    raise CommandNotFound(f"executable file {name!r} not found in $PATH ({path}) in the "
                          "image's root filesystem")


class EmulatedProcess:
    """The same life cycle as ``ContainerProcess``, with proot instead of namespaces."""

    def __init__(self, spec, container_dir: str, trace):
        self.spec, self.container_dir, self.trace = spec, container_dir, trace
        self.process: subprocess.Popen | None = None
        self.pid = 0
        self.status: ExitStatus | None = None

    def launch(self, stdio, console_socket: int = -1) -> None:
        root = rootfs.root_path(self.container_dir)
        os.makedirs(root, exist_ok=True)
        with self.trace.step("copy image layers", dest=root, layers=len(self.spec.layers)):
            rootfs.copy_layers(list(reversed(self.spec.layers)), root)
        env = container_env(self.spec)
        program = find_in_image(root, self.spec.command[0], env.get("PATH", DEFAULT_PATH))
        argv = [proot_path(), "-0", "-r", root, "-w", self.spec.workdir,
                "-b", "/dev", "-b", "/proc", "-b", "/sys", program, *self.spec.command[1:]]
        with self.trace.step("proot", argv=argv):
            limits = self.spec.rlimits
            self.process = subprocess.Popen(argv, stdin=stdio[0], stdout=stdio[1],
                                            stderr=stdio[2], env=env, start_new_session=True,
                                            preexec_fn=(lambda: rlimits.apply(limits))
                                            if limits else None)
        self.pid = self.process.pid

    def wait_until_running(self) -> None:
        pass

    def start(self, stdio, console_socket: int = -1) -> None:
        self.launch(stdio, console_socket)

    def send_signal(self, number: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.pid, number)

    def wait(self) -> ExitStatus:
        if self.status is None:
            code = self.process.wait()
            self.status = ExitStatus(128 - code, signal=-code) if code < 0 else ExitStatus(code)
        return self.status

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
