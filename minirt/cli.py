"""The ``minirt`` command line: docker's verbs, flags and exit codes.

Each subcommand parses its flags and calls the Engine; errors from minirt are
printed as one line (no traceback) and become the exit status, as docker does:
125 for a runtime error, 126/127 when the command cannot run, else the
container's own status (128+N when a signal N ended it).
"""

import os
import sys

from .errors import MinirtError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``minirt`` command: returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_run_quickly(argv) if argv[:1] == ["run"] else None
    if args is None:
        # Build only the subcommand asked for: every add_argument costs start-up time.
        only = argv[0] if argv and argv[0] in COMMANDS else None
        args = build_parser(only).parse_args(argv)
    if not getattr(args, "handler", None):
        build_parser().print_help()
        return 0
    try:
        return args.handler(args) or 0
    except MinirtError as e:
        if getattr(args, "trace", None) and getattr(e, "trace", None):
            print_trace(e.trace, args.trace)
        print(f"minirt: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("minirt: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # e.g. a state directory this user may not write: say which
        where = f": {e.filename}" if e.filename else ""
        print(f"minirt: {e.strerror or e}{where}", file=sys.stderr)
        return 125


def build_parser(only: str | None = None):
    import argparse
    parser = argparse.ArgumentParser(prog="minirt", description="A small, real container "
                                     "runtime for learning how Docker works.")
    sub = parser.add_subparsers(metavar="COMMAND")
    for name, (describe, handler, summary) in COMMANDS.items():
        if only in (None, name):
            # add_help=False for run: docker's -h means --hostname there.
            command = sub.add_parser(name, help=summary, description=summary,
                                     add_help=name != "run")
            describe(command)
            command.set_defaults(handler=handler)
    return parser


# ``minirt run``'s flags, docker's names: (flags, destination, kind, metavar, help).
# kind: "switch" (no value), "value" (the last one wins), "append" (repeatable),
# "optional" (a value only as --flag=VALUE).
RUN_FLAGS = [
    (("--rm",), "rm", "switch", None, "remove the container when it exits"),
    (("--name",), "name", "value", "NAME", "a name for the container"),
    (("-h", "--hostname"), "hostname", "value", "NAME", "the container's hostname"),
    (("-e", "--env"), "env", "append", "K=V", "set an environment variable"),
    (("-w", "--workdir"), "workdir", "value", "DIR", "working directory inside the container"),
    (("-v", "--volume"), "volume", "append", "HOST:PATH[:ro]", "bind-mount a host path"),
    (("-m", "--memory"), "memory", "value", "BYTES", "memory limit, e.g. 64m"),
    (("--cpus",), "cpus", "value", "N", "CPU limit, e.g. 0.5"),
    (("--pids-limit",), "pids_limit", "value", "N", "most processes at once, e.g. 32"),
    (("-i", "--interactive"), "interactive", "switch", None, "keep stdin open"),
    (("-t", "--tty"), "tty", "switch", None, "allocate a pseudo-terminal"),
    (("--storage",), "storage", "value", "overlay|copy",
     "root filesystem: overlay (default) or a full copy"),
    (("--trace",), "trace", "optional", "table|json",
     "print every kernel step the start took, with its cost, to stderr"),
]


def run_arguments(run) -> None:
    """Describe ``run`` to argparse (for --help and for error messages)."""
    import argparse
    run.add_argument("--help", action="help", help="show this help")
    for flags, dest, kind, metavar, text in RUN_FLAGS:
        action = {"switch": "store_true", "value": "store", "append": "append",
                  "optional": "store"}[kind]
        extra = {"default": []} if kind == "append" else {}
        if kind == "optional":  # --trace or --trace=json
            extra.update(nargs="?", const="table", choices=["table", "json"])
        if kind != "switch":
            extra["metavar"] = metavar
        run.add_argument(*flags, dest=dest, action=action, help=text, **extra)
    run.add_argument("image")
    run.add_argument("command", nargs=argparse.REMAINDER)


def parse_run_quickly(argv: list[str]):
    """Parse ``run FLAGS IMAGE [CMD...]`` straight from ``RUN_FLAGS``, docker style.

    Flags stop at the first word that is not one (the image); everything after
    it is the command. ``-it`` bundles switches, ``-m64m`` and ``--memory=64m``
    attach values. argparse would do the same, but importing and building it
    costs several milliseconds of every container's start-up (bench/startup),
    so it is used only for ``--help`` and errors: this returns None for
    anything unusual, and argparse then reports it in its own words.
    """
    from types import SimpleNamespace
    by_flag = {flag: (dest, kind) for flags, dest, kind, _, _ in RUN_FLAGS for flag in flags}
    values = {dest: ([] if kind == "append" else False if kind == "switch" else None)
              for _, dest, kind, _, _ in RUN_FLAGS}
    words, i = argv[1:], 0
    while i < len(words) and words[i].startswith("-") and words[i] != "-":
        word, attached = words[i], None
        if word.startswith("--") and "=" in word:
            word, attached = word.split("=", 1)
        elif not word.startswith("--") and word not in by_flag and len(word) > 2:
            if all(by_flag.get("-" + c, ("", ""))[1] == "switch" for c in word[1:]):
                for c in word[1:]:
                    values[by_flag["-" + c][0]] = True
                i += 1
                continue
            word, attached = word[:2], word[2:]
        if word not in by_flag:
            return None  # unknown flag or --help: argparse explains
        dest, kind = by_flag[word]
        if kind == "optional":
            values[dest] = attached or "table"
            i += 1
            continue
        if kind == "switch":
            if attached is not None:
                return None
            values[dest] = True
            i += 1
            continue
        if attached is None:
            if i + 1 >= len(words):
                return None
            attached, i = words[i + 1], i + 1
        if kind == "append":
            values[dest].append(attached)
        else:
            values[dest] = attached
        i += 1
    if i >= len(words):
        return None  # no image: argparse prints the usage
    if values["storage"] not in (None, "overlay", "copy") or \
            values["trace"] not in (None, "table", "json"):
        return None
    return SimpleNamespace(**values, image=words[i], command=words[i + 1:], handler=cmd_run)


def images_arguments(images) -> None:
    images.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    images.add_argument("-a", "--all", action="store_true",
                        help="show the build cache's intermediate images too")


def import_arguments(imp) -> None:
    imp.add_argument("file", help="a tar of a root filesystem, or - for stdin")
    imp.add_argument("reference", help="name[:tag] for the new image")


def stats_arguments(stats) -> None:
    stats.add_argument("--no-stream", action="store_true",
                       help="print one snapshot instead of refreshing every second")
    stats.add_argument("containers", nargs="*", metavar="CONTAINER",
                       help="names or ids (default: every running container)")


def bench_arguments(bench) -> None:
    bench.add_argument("what", choices=["compare"], help="compare: containers beside a VM")
    bench.add_argument("--out", default="compare-results", help="directory for PNGs and CSV")
    bench.add_argument("--containers", type=int, default=50, help="idle containers to start")
    bench.add_argument("--runs", type=int, default=20, help="container start-time runs")
    bench.add_argument("--cpu-iterations", type=int, default=300_000,
                       help="iterations of the CPU-bound shell loop")
    bench.add_argument("--no-vm", action="store_true", help="skip the QEMU VM baseline")


def lab_arguments(lab) -> None:
    lab.add_argument("what", choices=["check"],
                     help="check: run every notebook headless, write HTML and a summary")
    lab.add_argument("--notebooks", help="the notebooks directory (default: the lab's)")
    lab.add_argument("--out", default="lab-check", help="where the HTML copies go")


def ps_arguments(ps) -> None:
    ps.add_argument("-a", "--all", action="store_true", help="show stopped containers too")
    ps.add_argument("-q", "--quiet", action="store_true", help="only container IDs")


def rm_arguments(rm) -> None:
    rm.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    rm.add_argument("containers", nargs="+", metavar="CONTAINER")


def commit_arguments(commit) -> None:
    commit.add_argument("-c", "--change", action="append", default=[],
                        help="a Dockerfile instruction for the new config, e.g. 'CMD [\"sh\"]'")
    commit.add_argument("-m", "--message", default="", help="a note for the image's history")
    commit.add_argument("container")
    commit.add_argument("reference", help="REPOSITORY[:TAG] for the new image")


def one_container(parser) -> None:
    parser.add_argument("container")


def export_arguments(export) -> None:
    export.add_argument("-o", "--output", help="write to this file instead of stdout")
    export.add_argument("container")


def build_arguments(build) -> None:
    build.add_argument("-t", "--tag", required=True, help="NAME[:TAG] for the image")
    build.add_argument("-f", "--file", help="the Dockerfile (default: DIR/Dockerfile)")
    build.add_argument("--no-cache", action="store_true", help="run every step anew")
    build.add_argument("context", metavar="DIR")


def builder_arguments(builder) -> None:
    builder.add_argument("what", choices=["prune"], help="prune: forget the build cache")


def save_arguments(save) -> None:
    save.add_argument("-o", "--output", help="write to this file instead of stdout")
    save.add_argument("--format", choices=["docker", "oci"], default="docker",
                      help="docker: what `docker save` writes; oci: an OCI image layout")
    save.add_argument("images", nargs="+", metavar="IMAGE")


def load_arguments(load) -> None:
    load.add_argument("-i", "--input", help="a tar file or an OCI layout dir (default: stdin)")
    load.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    load.add_argument("--repository", help="name for images the archive leaves unnamed")


def rmi_arguments(rmi) -> None:
    rmi.add_argument("-f", "--force", action="store_true",
                     help="remove even when a container was made from it")
    rmi.add_argument("images", nargs="+", metavar="IMAGE")


def tag_arguments(tag) -> None:
    tag.add_argument("source", metavar="SOURCE_IMAGE")
    tag.add_argument("target", metavar="TARGET_IMAGE")


def one_image(parser) -> None:
    parser.add_argument("image")


def inspect_arguments(inspect) -> None:
    inspect.add_argument("names", nargs="+", metavar="NAME", help="images or containers")


def system_arguments(system) -> None:
    system.add_argument("what", choices=["df"], help="df: disk used by images, and what sharing saved")
    system.add_argument("-v", "--verbose", action="store_true", help="one line per image")


def doctor_arguments(doctor) -> None:
    doctor.add_argument("--json", action="store_true", help="machine-readable output")


def no_arguments(parser) -> None:
    pass


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
        stdin=args.interactive, storage=args.storage, trace=bool(args.trace),
        notice=lambda text: print(f"minirt: {text}", file=sys.stderr))
    if args.trace:
        print_trace(result.trace, args.trace)
    if result.oom_killed:
        print(f"minirt: container {result.name} was killed: out of memory (OOMKilled, "
              f"limit {args.memory})", file=sys.stderr)
    return result.exit_code


def print_trace(steps, style: str) -> None:
    from . import trace
    text = trace.to_json_lines(steps) if style == "json" else trace.format_table(steps)
    print(text, file=sys.stderr)


def cmd_stats(args) -> int:
    """``docker stats``: CPU %, memory usage / limit, memory %, pids per running container."""
    import time
    from .engine import Engine
    from .lab.monitor import Sampler, stats_row
    engine = Engine()
    chosen = [engine.find_container(c) for c in args.containers] if args.containers else \
        [c for c in engine.containers() if c["running"]]
    samplers = [Sampler(c.get("name") or c["id"][:12], cgroup=engine.cgroups.cgroup(c["id"]))
                for c in chosen]
    ids = {s.name: c["id"][:12] for s, c in zip(samplers, chosen)}
    for sampler in samplers:
        sampler.sample()  # CPU % needs two samples
    while True:
        time.sleep(1.0 if not args.no_stream else 0.5)
        rows = [("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS")]
        for sampler in samplers:
            row = stats_row(sampler.sample())
            rows.append((ids[sampler.name], sampler.name, f"{row['cpu_percent']:.2f}%",
                         f"{human_bytes(row['memory_bytes'])} / {human_bytes(row['memory_limit_bytes'])}",
                         f"{row['memory_percent']:.2f}%", str(row["pids"])))
        if not args.no_stream:
            print("\033[2J\033[H", end="")  # clear the screen, as docker stats does
        print_table(rows)
        if args.no_stream:
            return 0


def human_bytes(size: int) -> str:
    """Binary units, as docker stats prints memory: 1.5MiB, 64MiB, 23.5GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.4g}{unit}"
        size /= 1024
    return str(size)


def cmd_bench(args) -> int:
    from .engine import Engine
    from .lab.compare import run_all
    run_all(Engine(), args.out, containers=args.containers, start_runs=args.runs,
            cpu_iterations=args.cpu_iterations, boot_vm=not args.no_vm)
    return 0


def cmd_lab(args) -> int:
    from .lab.instructor import check_lab, default_notebooks_dir
    runs = check_lab(args.notebooks or default_notebooks_dir(), args.out)
    failed = [r.notebook for r in runs if not r.passed]
    print(f"{len(runs) - len(failed)} of {len(runs)} notebooks passed; summary in "
          f"{os.path.join(args.out, 'index.html')}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed or not runs else 0


def cmd_ps(args) -> int:
    """``docker ps``: running containers (``-a``: all), after finishing stale cleanups."""
    import time
    from .engine import Engine
    engine = Engine()
    engine.reap_stale()
    rows = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES")]
    for c in sorted(engine.containers(), key=lambda c: c.get("created", 0), reverse=True):
        if not (c["running"] or args.all):
            continue
        if args.quiet:
            print(c["id"][:12])
            continue
        state = c["state"]
        status = "Up" if c["running"] else (
            f"Exited ({state['exit_code']})" if state.get("exit_code") is not None else
            state.get("status", "created").capitalize())
        command = " ".join(c["command"])
        age = time.time() - c.get("created", time.time())
        rows.append((c["id"][:12], c["image"], f'"{command[:20]}"', f"{age:.0f} seconds ago",
                     status, c["name"]))
    if not args.quiet:
        print_table(rows)
    return 0


def cmd_rm(args) -> int:
    from .engine import Engine
    engine = Engine()
    for ref in args.containers:
        engine.remove_container(ref, force=args.force)
        print(ref)
    return 0


def cmd_commit(args) -> int:
    from .engine import Engine
    image = Engine().commit(args.container, args.reference, args.change, args.message)
    print(image.id)
    return 0


def cmd_diff(args) -> int:
    from .engine import Engine
    for kind, path in Engine().diff(args.container):
        print(kind, path)
    return 0


def cmd_export(args) -> int:
    from .engine import Engine
    engine = Engine()
    if args.output:
        tmp = args.output + ".part"  # renamed when complete: never half a tar under the name
        with open(tmp, "wb") as out:
            engine.export(args.container, out)
        os.rename(tmp, args.output)
    elif os.isatty(1):
        print("minirt: refusing to write a tar to a terminal: use -o FILE or a redirect",
              file=sys.stderr)
        return 125
    else:
        engine.export(args.container, sys.stdout.buffer)
    return 0


def cmd_build(args) -> int:
    from .engine import Engine
    from .image import build
    build.build(Engine(), args.context, args.file, args.tag, args.no_cache, progress=print)
    return 0


def cmd_builder(args) -> int:
    from .engine import Engine
    from .image import build
    build.prune_cache(Engine())
    return 0


def cmd_save(args) -> int:
    from .engine import Engine
    from .image import archive
    if not args.output and os.isatty(1):
        print("minirt: refusing to write a tar to a terminal: use -o FILE or a redirect",
              file=sys.stderr)
        return 125
    archive.save(Engine().images, args.images, args.output or sys.stdout.buffer,
                 format=args.format)
    return 0


def cmd_load(args) -> int:
    from .engine import Engine
    from .image import archive
    images = archive.load(Engine().images, args.input or sys.stdin.buffer,
                          repository=args.repository)
    if not args.quiet:
        for image in images:
            print(f"Loaded image: {image.name}")
    return 0


def cmd_rmi(args) -> int:
    from .engine import Engine
    engine = Engine()
    for name in args.images:
        removed = engine.remove_image(name, force=args.force)
        print(f"Untagged: {name}")
        for digest in removed:
            print(f"Deleted: {digest}")
    return 0


def cmd_tag(args) -> int:
    from .engine import Engine
    store = Engine().images
    store.tag(args.target, store.resolve(args.source).manifest_digest)
    return 0


def cmd_history(args) -> int:
    from .engine import Engine
    image = Engine().images.resolve(args.image)
    rows = [("IMAGE", "CREATED", "CREATED BY", "SIZE")]
    history = [h for h in image.config.get("history", []) if not h.get("empty_layer")]
    for i, (layer, entry) in enumerate(reversed(list(zip(image.layers, history)))):
        rows.append((image.id.removeprefix("sha256:")[:12] if i == 0 else "<missing>",
                     entry.get("created", ""), entry.get("created_by", "")[:60],
                     human_size(layer.size)))
    print_table(rows)
    return 0


def cmd_inspect(args) -> int:
    import json
    from .engine import Engine
    from .errors import ContainerNotFound, ImageNotFound
    engine, found = Engine(), []
    for name in args.names:
        try:
            image = engine.images.resolve(name)
            found.append({"Id": image.id, "RepoTags": [image.name],
                          "ManifestDigest": image.manifest_digest, "Config": image.run_config,
                          "RootFS": image.config.get("rootfs"), "History": image.config.get("history"),
                          "Layers": [layer.to_dict() for layer in image.layers],
                          "Size": sum(layer.size for layer in image.layers)})
        except ImageNotFound:
            try:
                found.append(engine.find_container(name))
            except ContainerNotFound:
                raise ContainerNotFound(f"no such image or container: {name}") from None
    print(json.dumps(found, indent=2))
    return 0


def cmd_system(args) -> int:
    from .engine import Engine
    usage = Engine().images.disk_usage()
    print_table([("TYPE", "TOTAL", "SIZE", "SAVED BY SHARING"),
                 ("Images", str(len(usage["images"])), human_size(usage["total"]),
                  human_size(usage["saved"]))])
    if args.verbose:
        print()
        print_table([("REPOSITORY:TAG", "IMAGE ID", "LAYERS", "SIZE", "SHARED SIZE", "UNIQUE SIZE")] +
                    [(i["name"], i["id"].removeprefix("sha256:")[:12], str(i["layers"]),
                      human_size(i["size"]), human_size(i["shared"]), human_size(i["unique"]))
                     for i in usage["images"]])
    return 0


def cmd_images(args) -> int:
    from .engine import Engine
    from .image.build import CACHE_REPOSITORY  # the build cache's intermediate images
    images = [i for i in Engine().images.images()
              if args.all or not i.name.startswith(CACHE_REPOSITORY + ":")]
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


def cmd_version(args) -> int:
    from . import __version__
    print(f"minirt {__version__}")
    return 0


# name: (how to describe its arguments, what runs it, one-line help)
COMMANDS = {
    "run": (run_arguments, cmd_run, "run a command in a new container"),
    "ps": (ps_arguments, cmd_ps, "list containers"),
    "rm": (rm_arguments, cmd_rm, "remove containers"),
    "images": (images_arguments, cmd_images, "list local images"),
    "commit": (commit_arguments, cmd_commit, "make a new image from a container's changes"),
    "diff": (one_container, cmd_diff, "show what a container added, changed, deleted"),
    "export": (export_arguments, cmd_export, "a container's filesystem as a tar"),
    "build": (build_arguments, cmd_build, "build an image from a Dockerfile"),
    "builder": (builder_arguments, cmd_builder, "builder prune: forget the build cache"),
    "save": (save_arguments, cmd_save, "images to a tar (docker save format, or OCI)"),
    "load": (load_arguments, cmd_load, "images from a tar or an OCI layout"),
    "rmi": (rmi_arguments, cmd_rmi, "remove images"),
    "tag": (tag_arguments, cmd_tag, "give an image another name"),
    "history": (one_image, cmd_history, "the layers of an image"),
    "inspect": (inspect_arguments, cmd_inspect, "images or containers, as JSON"),
    "system": (system_arguments, cmd_system, "system df: disk used, and saved by sharing"),
    "import": (import_arguments, cmd_import,
               "create an image from a flat root filesystem tarball"),
    "init": (no_arguments, cmd_init, "prepare the state directory and build busybox:latest "
             "from the host's static busybox (no network)"),
    "stats": (stats_arguments, cmd_stats, "live resource use of running containers"),
    "bench": (bench_arguments, cmd_bench, "measure containers beside a VM, write figures"),
    "lab": (lab_arguments, cmd_lab, "instructor check: run every notebook, write HTML"),
    "doctor": (doctor_arguments, cmd_doctor, "what this machine allows, and its privilege tier"),
    "version": (no_arguments, cmd_version, "show the minirt version"),
}


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


def run_and_exit() -> None:
    """The console script: run ``main`` and leave at once.

    ``os._exit`` skips the interpreter's tear-down (freeing every module), a few
    milliseconds that every ``minirt run`` would otherwise pay at exit.
    """
    import gc
    gc.disable()  # a short-lived command: no garbage-collection pauses, fewer copy-on-write
    try:          # faults in the forked container processes
        code = main()
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # e.g. `minirt doctor | head`: the reader has gone
        code = 141           # 128 + SIGPIPE, as a shell reports it
    os._exit(code)


if __name__ == "__main__":
    run_and_exit()
