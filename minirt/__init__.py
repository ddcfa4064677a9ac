"""minirt: a small but real container runtime, written to be read.

    >>> import minirt
    >>> result = minirt.run("busybox", ["echo", "hi"], memory="64m")
    >>> result.exit_code, result.output
    (0, 'hi\\n')

Layers (each imports only the ones below it): ``kernel`` (syscalls, namespaces,
mounts, cgroups) -> ``image`` (OCI store, layers) -> ``runtime`` (spec, init,
container) -> ``engine`` -> ``cli``; ``lab`` holds the notebooks' helpers.
"""

__version__ = "0.1.0"


def run(image: str, command=None, **options):
    """Run a container to completion and return a ``RunResult`` (see ``Engine.run``)."""
    from .engine import Engine
    return Engine().run(image, command, **options)
