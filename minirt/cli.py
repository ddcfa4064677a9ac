"""The ``minirt`` command line: docker's verbs, flags and exit codes.

Each subcommand parses its flags and calls the Engine; errors from minirt are
printed as one line (no traceback) and become the exit status, as docker does:
125 for a runtime error, 126/127 when the command cannot run, else the
container's own status (128+N when a signal N ended it).
"""

import argparse
import os
import sys

from .errors import MinirtError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return args.handler(args) or 0
    except MinirtError as e:
        print(f"minirt: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("minirt: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minirt", description="A small, real container "
                                     "runtime for learning how Docker works.")
    sub = parser.add_subparsers(metavar="COMMAND")

    # add_help=False: docker's -h means --hostname here, so help is --help only.
    run = sub.add_parser("run", help="run a command in a new container", add_help=False)
    run.add_argument("--help", action="help", help="show this help")
    run.add_argument("--rm", action="store_true", help="remove the container when it exits")
    run.add_argument("--name", help="a name for the container")
    run.add_argument("--hostname", "-h", dest="hostname", help="the container's hostname")
    run.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                     help="set an environment variable")
    run.add_argument("-w", "--workdir", help="working directory inside the container")
    run.add_argument("-v", "--volume", action="append", default=[], metavar="HOST:PATH[:ro]",
                     help="bind-mount a host path")
    run.add_argument("-m", "--memory", help="memory limit, e.g. 64m")
    run.add_argument("--cpus", help="CPU limit, e.g. 0.5")
    run.add_argument("--pids-limit", help="most processes at once, e.g. 32")
    run.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    run.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    run.add_argument("--storage", choices=["overlay", "copy"],
                     help="root filesystem: overlay (default) or a full copy")
    run.add_argument("image")
    run.add_argument("command", nargs=argparse.REMAINDER)
    run.set_defaults(handler=cmd_run)

    images = sub.add_parser("images", help="list local images")
    images.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    images.set_defaults(handler=cmd_images)

    imp = sub.add_parser("import", help="create an image from a flat root filesystem tarball")
    imp.add_argument("file", help="a tar of a root filesystem, or - for stdin")
    imp.add_argument("reference", help="name[:tag] for the new image")
    imp.set_defaults(handler=cmd_import)

    init = sub.add_parser("init", help="prepare the state directory and build busybox:latest "
                          "from the host's static busybox (no network)")
    init.set_defaults(handler=cmd_init)

    doctor = sub.add_parser("doctor", help="what this machine allows, and its privilege tier")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(handler=cmd_doctor)

    version = sub.add_parser("version", help="show the minirt version")
    version.set_defaults(handler=lambda args: print(f"minirt {__import__('minirt').__version__}"))
    return parser


def cmd_run(args) -> int:
    from .engine import Engine
    from .runtime.stdio import Passthrough, Terminal
    if args.tty and not os.isatty(0) and args.interactive:
        print("minirt: the input device is not a TTY", file=sys.stderr)
        return 125
    stdio = Terminal(args.interactive) if args.tty else Passthrough(args.interactive)
    result = Engine().run(
        args.image, args.command, remove=args.rm, stdio=stdio, name=args.name,
        hostname=args.hostname, env=args.env, workdir=args.workdir, volumes=args.volume,
        memory=args.memory, cpus=args.cpus, pids_limit=args.pids_limit, tty=args.tty,
        stdin=args.interactive, storage=args.storage)
    if result.oom_killed:
        print(f"minirt: container {result.name} was killed: out of memory (OOMKilled, "
              f"limit {args.memory})", file=sys.stderr)
    return result.exit_code


def cmd_images(args) -> int:
    from .engine import Engine
    images = Engine().images.images()
    if args.quiet:
        for image in images:
            print(image.id.removeprefix("sha256:")[:12])
        return 0
    rows = [("REPOSITORY", "TAG", "IMAGE ID", "SIZE")]
    for image in images:
        repository, _, tag = image.name.rpartition(":")
        size = sum(layer.size for layer in image.layers)
        rows.append((repository, tag, image.id.removeprefix("sha256:")[:12], human_size(size)))
    print_table(rows)
    return 0


def cmd_import(args) -> int:
    from .engine import Engine
    from .image.importer import import_rootfs_tar
    source = sys.stdin.buffer if args.file == "-" else args.file
    image = import_rootfs_tar(Engine().images, source, args.reference)
    print(image.id)
    return 0


def cmd_init(args) -> int:
    from .engine import Engine
    from .image import busybox
    engine = Engine()
    image = busybox.ensure(engine.images)
    engine.images.unpacked_layers(image)
    print(f"{image.name} {image.id.removeprefix('sha256:')[:12]} in {engine.root}")
    return 0


def cmd_doctor(args) -> int:
    import json
    from . import doctor
    report = doctor.probe()
    print(json.dumps(report.to_dict(), indent=2) if args.json else doctor.format_report(report))
    return 0


def human_size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.3g}{unit}" if unit != "B" else f"{size}B"
        size /= 1000
    return f"{size}"


def print_table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
