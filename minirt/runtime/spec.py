"""What a container is made of, as plain data (cf. the OCI runtime spec's config.json)."""

import os

from ..kernel.cgroups import Limits
from ..kernel.namespaces import CONTAINER_NAMESPACES
from ..record import Record


class Volume(Record):
    """A host path made visible inside the container (``-v HOST:PATH[:ro]``)."""

    __slots__ = ("source", "target", "readonly")

    def __init__(self, source: str, target: str, readonly: bool = False):
        self.source = source
        self.target = target
        self.readonly = readonly


class ContainerSpec(Record):
    """Everything the runtime needs to start one container."""

    __slots__ = ("id", "layers", "command", "env", "workdir", "hostname", "volumes", "limits",
                 "namespaces", "tty", "stdin", "storage", "name", "image", "image_id", "rlimits",
                 "labels", "network", "ip", "ports", "dns", "privileged", "cap_add", "cap_drop",
                 "security_opt", "user", "read_only")

    def __init__(self, id: str, layers: list[str], command: list[str],
                 env: dict[str, str] | None = None, workdir: str = "/", hostname: str = "",
                 volumes: list[Volume] | None = None, limits: Limits | None = None,
                 namespaces: tuple[str, ...] = CONTAINER_NAMESPACES, tty: bool = False,
                 stdin: bool = False, storage: str = "overlay", name: str = "", image: str = "",
                 image_id: str = "", rlimits: dict | None = None, labels: dict | None = None,
                 network: str = "none", ip: str = "", ports: list | None = None,
                 dns: list | None = None, privileged: bool = False, cap_add: list | None = None,
                 cap_drop: list | None = None, security_opt: list | None = None, user: str = "",
                 read_only: bool = False):
        self.id = id
        self.layers = layers            # image layer directories, top first
        self.command = command          # argv inside the container
        self.env = env or {}
        self.workdir = workdir
        self.hostname = hostname
        self.volumes = volumes or []
        self.limits = limits or Limits()
        self.namespaces = namespaces
        self.tty = tty                  # -t: give the command a pseudo-terminal
        self.stdin = stdin              # -i: keep stdin open to the command
        self.storage = storage          # "overlay", or "copy" where overlayfs is missing
        self.name = name
        self.image = image
        self.image_id = image_id        # the config digest: survives re-tagging
        self.rlimits = rlimits or {}    # rootless without cgroups: {"RLIMIT_AS": bytes, ...}
        self.labels = labels or {}      # docker's --label KEY=VALUE: metadata, for filters
        self.network = network          # --network: "bridge", "none", "host" or a network's name
        self.ip = ip                    # --ip: a chosen address on a user-defined network
        self.ports = ports or []        # -p: [PortMapping.to_dict(), ...]
        self.dns = dns or []            # --dns: nameservers for /etc/resolv.conf
        self.privileged = privileged    # --privileged: no hardening at all (security/)
        self.cap_add = cap_add or []    # --cap-add NAME: capabilities beyond docker's 14
        self.cap_drop = cap_drop or []  # --cap-drop NAME
        self.security_opt = security_opt or []  # seccomp=unconfined, no-new-privileges=false
        self.user = user                # --user UID[:GID] or NAME[:GROUP]
        self.read_only = read_only      # --read-only: the root filesystem

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["volumes"] = [v.to_dict() for v in self.volumes]
        d["limits"] = self.limits.to_dict()
        d["namespaces"] = list(self.namespaces)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ContainerSpec":
        """The spec back from a container's config.json (for ``start`` of a stopped one)."""
        fields = {name: d[name] for name in cls.__slots__ if name in d}
        fields["volumes"] = [Volume(**v) for v in d.get("volumes") or []]
        fields["limits"] = Limits(**(d.get("limits") or {}))
        fields["namespaces"] = tuple(d.get("namespaces") or CONTAINER_NAMESPACES)
        return cls(**fields)


class ExitStatus(Record):
    """How a container ended: docker's exit code convention, plus OOMKilled."""

    __slots__ = ("exit_code", "oom_killed", "signal")

    def __init__(self, exit_code: int, oom_killed: bool = False, signal: int | None = None):
        self.exit_code = exit_code
        self.oom_killed = oom_killed
        self.signal = signal

    @classmethod
    def from_wait_status(cls, status: int) -> "ExitStatus":
        """Decode a waitpid(2) status: a signal N becomes exit code 128+N, as in a shell."""
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            return cls(128 - code, signal=-code)
        return cls(code)
