"""What a container is made of, as plain data (cf. the OCI runtime spec's config.json)."""

import os
from dataclasses import dataclass, field

from ..kernel.cgroups import Limits
from ..kernel.namespaces import CONTAINER_NAMESPACES


@dataclass(frozen=True)
class Volume:
    """A host path made visible inside the container (``-v HOST:PATH[:ro]``)."""

    source: str
    target: str
    readonly: bool = False


@dataclass
class ContainerSpec:
    """Everything the runtime needs to start one container."""

    id: str
    layers: list[str]                 # image layer directories, top first
    command: list[str]                # argv inside the container
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    hostname: str = ""
    volumes: list[Volume] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    namespaces: tuple[str, ...] = CONTAINER_NAMESPACES
    tty: bool = False                 # -t: give the command a pseudo-terminal
    stdin: bool = False               # -i: keep stdin open to the command
    storage: str = "overlay"          # "overlay", or "copy" where overlayfs is missing
    name: str = ""
    image: str = ""

    def to_dict(self) -> dict:
        return {
            "id": self.id, "name": self.name, "image": self.image, "layers": self.layers,
            "command": self.command, "env": self.env, "workdir": self.workdir,
            "hostname": self.hostname,
            "volumes": [[v.source, v.target, v.readonly] for v in self.volumes],
            "limits": {"memory": self.limits.memory, "cpus": self.limits.cpus,
                       "pids": self.limits.pids},
            "namespaces": list(self.namespaces), "tty": self.tty, "stdin": self.stdin,
            "storage": self.storage,
        }


@dataclass
class ExitStatus:
    """How a container ended: docker's exit code convention, plus OOMKilled."""

    exit_code: int
    oom_killed: bool = False
    signal: int | None = None

    @classmethod
    def from_wait_status(cls, status: int) -> "ExitStatus":
        """Decode a waitpid(2) status: a signal N becomes exit code 128+N, as in a shell."""
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            return cls(128 - code, signal=-code)
        return cls(code)
