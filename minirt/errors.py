"""One family of errors, each with a message a student can act on.

The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``;
no traceback is shown for a ``MinirtError``. Exit codes follow ``docker run``:
125 when the runtime itself fails, 126 when the command cannot be invoked,
127 when the command is not found.
"""


class MinirtError(Exception):
    """Base of every error minirt raises on purpose."""

    exit_code = 125


class UsageError(MinirtError):
    """A flag or argument the user gave cannot be understood (e.g. ``-m lots``)."""


class ImageNotFound(MinirtError):
    """The image is not in the local store."""


class ImageError(MinirtError):
    """An image or layer is malformed, unsafe or inconsistent."""


class ContainerNotFound(MinirtError):
    """No container has this name or id."""


class ContainerError(MinirtError):
    """The container is in the wrong state for this (e.g. removing a running one)."""


class NameInUse(ContainerError):
    """Another container already has this name (docker's 409 Conflict)."""


class BuildError(MinirtError):
    """A build step failed (a RUN exited non-zero, a COPY source is missing, ...)."""

    exit_code = 1  # as `docker build`


class CgroupError(MinirtError):
    """A cgroup could not be created, limited or removed."""


class KernelFeatureMissing(MinirtError):
    """This machine (or this privilege tier) lacks a kernel feature we need."""


class ContainerStartError(MinirtError):
    """Setting up the container failed before the command could run."""


class CommandNotFound(ContainerStartError):
    """The command does not exist inside the container's root filesystem."""

    exit_code = 127


class CommandNotExecutable(ContainerStartError):
    """The command exists but cannot be executed (permissions, format)."""

    exit_code = 126


class RegistryError(MinirtError):
    """A registry could not be started, stopped or reached (port in use, binary missing, ...),
    or it answered a request with an error (unknown tag, refused upload, ...)."""


class AuthError(RegistryError):
    """A registry or its token server refused our credentials, or we have none for it."""


class VMError(MinirtError):
    """A virtual machine could not be started, or its guest hung and was killed."""


class NetworkError(MinirtError):
    """A network cannot be created, used or removed (overlapping subnet, no free address,
    endpoints still attached, a bridge or veth the kernel refused)."""
