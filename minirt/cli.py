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
    host, argv = global_options(argv)
    args = parse_run_quickly(argv) if argv[:1] == ["run"] else None
    if args is None:
        # Build only the subcommand asked for: every add_argument costs start-up time.
        only = argv[0] if argv and argv[0] in COMMANDS else None
        args = build_parser(only).parse_args(argv)
    if not getattr(args, "handler", None):
        build_parser().print_help()
        return 0
    try:
        # args.client_host, not args.host: ``minirt daemon -H`` has a host of its own.
        args.client_host = None if argv[0] in LOCAL_COMMANDS else daemon_host(host)
        if args.client_host and argv[0] not in REMOTE_COMMANDS:
            print(f"minirt {argv[0]} is not available through the daemon at "
                  f"{args.client_host}: run it without MINIRT_HOST (or with -H direct)",
                  file=sys.stderr)
            return 125
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
    parser = argparse.ArgumentParser(
        prog="minirt", description="A small, real container runtime for learning how Docker "
        "works.", epilog="Client mode, docker's way: with -H ADDRESS, MINIRT_HOST=ADDRESS, or "
        "(when neither is given) a daemon answering on the default socket "
        f"({DEFAULT_SOCKET} as root, $XDG_RUNTIME_DIR/minirt.sock otherwise), commands go "
        "to that daemon (minirt daemon) over the Docker Engine API. -H direct or MINIRT_HOST= "
        "(empty) forces direct mode: this process does the work on the local state directory.")
    # Parsed by global_options before argparse sees it; here for --help and its errors.
    parser.add_argument("-H", "--host", metavar="ADDRESS", dest="global_host",
                        default=argparse.SUPPRESS, help="the daemon to use: unix:///path/to/"
                        "minirt.sock, tcp://127.0.0.1:PORT, or direct (no daemon)")
    sub = parser.add_subparsers(metavar="COMMAND")
    for name, (describe, handler, summary) in COMMANDS.items():
        if only in (None, name):
            # add_help=False for run and create: docker's -h means --hostname there.
            command = sub.add_parser(name, help=summary, description=summary,
                                     add_help=name not in ("run", "create"))
            describe(command)
            command.set_defaults(handler=handler)
    return parser


# --- client mode: which daemon, if any, does the work ---------------------------------
DEFAULT_SOCKET = "/run/minirt/minirt.sock"  # as root; daemon/server.py's default_socket_path

# Commands that go through the daemon in client mode, and commands that never do
# (they touch no container or image state: the daemon itself, this machine's
# checks, the client's registry logins). Any other one is refused in client mode,
# never run directly on a state the daemon does not use.
REMOTE_COMMANDS = {"run", "create", "start", "attach", "stop", "restart", "kill", "wait",
                   "logs", "exec", "top", "rm", "ps", "images", "commit", "pull", "push",
                   "rmi", "tag", "inspect", "version"}
LOCAL_COMMANDS = {"daemon", "doctor", "login", "logout", "registry", "lab", "exercise"}


def global_options(argv: list[str]) -> tuple[str | None, list[str]]:
    """``-H ADDRESS`` / ``--host[=]ADDRESS`` before the command, as docker's: (address, rest)."""
    host = None
    while argv[:1] and (argv[0] in ("-H", "--host") and len(argv) > 1 or
                        argv[0].startswith("--host=")):
        if argv[0].startswith("--host="):
            host, argv = argv[0][len("--host="):], argv[1:]
        else:
            host, argv = argv[1], argv[2:]
    return host, argv


def daemon_host(option: str | None) -> str | None:
    """The daemon's address, or None for direct mode: ``-H``, else ``MINIRT_HOST``
    (empty or ``direct``: direct mode), else the default socket if a daemon answers
    there. Without a daemon this costs one stat(): ``minirt run`` stays fast."""
    chosen = option if option is not None else os.environ.get("MINIRT_HOST")
    if chosen is not None:
        return None if chosen.strip() in ("", "direct") else chosen.strip()
    if os.geteuid() == 0:
        path = DEFAULT_SOCKET
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = os.path.join(os.environ["XDG_RUNTIME_DIR"], "minirt.sock")
    else:
        return None
    import stat  # already loaded by os: free
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return None
    except OSError:
        return None
    from .daemon.client import RemoteEngine
    address = f"unix://{path}"
    # A socket file nobody listens on (a daemon that was killed) means no daemon.
    return address if RemoteEngine(address).probe() else None


def engine_for(args):
    """The Engine that does this command's work: this process's own (direct mode), or
    the daemon's (``daemon.client.RemoteEngine``: the same methods, as API requests)."""
    if getattr(args, "client_host", None):
        from .daemon.client import RemoteEngine
        return RemoteEngine(args.client_host)
    from .engine import Engine
    return Engine()


def is_remote(engine) -> bool:
    return getattr(engine, "remote", False)


# ``minirt run``'s flags, docker's names: (flags, destination, kind, metavar, help).
# kind: "switch" (no value), "value" (the last one wins), "append" (repeatable),
# "optional" (a value only as --flag=VALUE).
RUN_FLAGS = [
    (("--rm",), "rm", "switch", None, "remove the container when it exits"),
    (("-d", "--detach"), "detach", "switch", None,
     "run in the background (kept by its shim) and print the container's id"),
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
    (("--network",), "network", "value", "bridge|none|host|NAME",
     "the container's network (default bridge as root, none without)"),
    (("-p", "--publish"), "publish", "append", "[IP:]HOSTPORT:PORT",
     "publish a container's port on the host (127.0.0.1 unless an IP is given)"),
    (("--ip",), "ip", "value", "ADDRESS", "the container's address on a user-defined network"),
    (("--dns",), "dns", "append", "ADDRESS", "a nameserver for the container's resolv.conf"),
    (("-u", "--user"), "user", "value", "UID[:GID]", "run the command as this user"),
    (("--read-only",), "read_only", "switch", None, "mount the root filesystem read-only"),
    (("--cap-add",), "cap_add", "append", "CAP", "a capability beyond docker's default 14"),
    (("--cap-drop",), "cap_drop", "append", "CAP", "a capability to take away (ALL: every one)"),
    (("--security-opt",), "security_opt", "append", "OPT",
     "seccomp=unconfined, or no-new-privileges=false"),
    (("--privileged",), "privileged", "switch", None,
     "no hardening: every capability, no seccomp, no masked paths, the host's devices"),
    (("--ulimit",), "ulimit", "append", "NAME=SOFT[:HARD]", "a resource limit, e.g. nofile=1024"),
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


def transfer_arguments(command) -> None:
    command.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    command.add_argument("image", metavar="NAME[:TAG|@DIGEST]",
                         help="e.g. localhost:5000/lab/app:1 (busybox = "
                              "docker.io/library/busybox:latest)")


def server_argument(command) -> None:
    command.add_argument("server", nargs="?", metavar="SERVER",
                         help="registry host[:port] (default: docker.io)")


def login_arguments(login) -> None:
    login.add_argument("-u", "--username")
    login.add_argument("-p", "--password", help="visible in ps and shell history: "
                       "prefer --password-stdin")
    login.add_argument("--password-stdin", action="store_true",
                       help="read the password from standard input")
    server_argument(login)


def tag_arguments(tag) -> None:
    tag.add_argument("source", metavar="SOURCE_IMAGE")
    tag.add_argument("target", metavar="TARGET_IMAGE")


def one_image(parser) -> None:
    parser.add_argument("image")


def inspect_arguments(inspect) -> None:
    inspect.add_argument("names", nargs="+", metavar="NAME", help="images or containers")


def system_arguments(system) -> None:
    system.add_argument("what", choices=["df", "prune"], help="df: disk used by images, and what "
                        "sharing saved; prune: remove stopped containers, dangling blobs and "
                        "layers, the build cache and what crashes left (see minirt/system.py)")
    system.add_argument("-v", "--verbose", action="store_true", help="one line per image")
    system.add_argument("-f", "--force", action="store_true", help="prune: do not ask first")


def doctor_arguments(doctor) -> None:
    doctor.add_argument("--json", action="store_true", help="machine-readable output")


def no_arguments(parser) -> None:
    pass


def cmd_run(args) -> int:
    if args.detach:
        return cmd_create(args, start=True)
    if args.tty and not os.isatty(0) and args.interactive:
        print("minirt: the input device is not a TTY", file=sys.stderr)
        return 125
    if getattr(args, "client_host", None):
        return remote_run(args)
    from .engine import Engine
    from .runtime.stdio import Passthrough, Terminal
    stdio = Terminal(args.interactive) if args.tty else Passthrough(args.interactive)
    result = Engine().run(
        args.image, args.command, remove=args.rm, stdio=stdio, name=args.name,
        hostname=args.hostname, env=args.env, workdir=args.workdir, volumes=args.volume,
        memory=args.memory, cpus=args.cpus, pids_limit=args.pids_limit, tty=args.tty,
        stdin=args.interactive, storage=args.storage, trace=bool(args.trace),
        network=args.network, ip=args.ip, publish=args.publish, dns=args.dns,
        **security_options(args), notice=lambda text: print(f"minirt: {text}", file=sys.stderr))
    if args.trace:
        print_trace(result.trace, args.trace)
    if result.oom_killed:
        print(f"minirt: container {result.name} was killed: out of memory (OOMKilled, "
              f"limit {args.memory})", file=sys.stderr)
    return result.exit_code


def remote_run(args) -> int:
    """``docker run`` as the docker CLI does it: create, attach, wait, start; then copy
    the container's output here until it exits, and exit with its status."""
    from .errors import UsageError
    if args.trace:
        raise UsageError("--trace is not available through the daemon: the kernel steps "
                         "happen in its process (run without MINIRT_HOST to see them)")
    engine = engine_for(args)
    container_id = engine.create(
        args.image, args.command, tty=args.tty, stdin_open=args.interactive, remove=args.rm,
        notice=lambda text: print(f"minirt: {text}", file=sys.stderr), **container_options(args))
    container = {"id": container_id, "name": args.name or container_id[:12], "tty": args.tty,
                 "stdin": args.interactive, "auto_remove": args.rm}
    code = attach_session(engine, container_id, args.interactive, start=True,
                          container=container, proxy_signals=True)
    if code == 137 and not args.rm:  # with --rm the daemon has forgotten why (as docker's)
        if engine.inspect(container_id).get("State", {}).get("OOMKilled"):
            print(f"minirt: container {container['name']} was killed: out of memory "
                  f"(OOMKilled, limit {args.memory})", file=sys.stderr)
    return code


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
    engine = engine_for(args)
    engine.reap_stale()
    rows = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")]
    for c in sorted(engine.containers(), key=lambda c: c.get("created", 0), reverse=True):
        if not (c["running"] or args.all):
            continue
        if args.quiet:
            print(c["id"][:12])
            continue
        status = c.get("status_text") or container_status(c)  # the daemon's own words
        command = " ".join(c["command"])
        created = f"{duration(c.get('created', time.time()))} ago"
        rows.append((c["id"][:12], c["image"], f'"{command[:20]}"', created,
                     status, ", ".join(published_ports(engine, c)), c["name"]))
    if not args.quiet:
        print_table(rows)
    return 0


def published_ports(engine, container: dict) -> list[str]:
    """docker ps's PORTS: ``127.0.0.1:8080->80/tcp`` for each port a running container
    publishes (the daemon's list in client mode, the network record in direct mode)."""
    if "published" in container:
        return container["published"]
    if not container["running"] or is_remote(engine):
        return []
    from .network import sandbox
    record = sandbox.load_record(os.path.join(engine.containers_dir, container["id"])) or {}
    return [f"{p['host_ip']}:{p['host_port']}->{p['container_port']}/{p['protocol']}"
            for p in record.get("ports", [])]


def each_container(args, act) -> int:
    """``act(engine, ref)`` for every container named, printing each name as docker does."""
    engine = engine_for(args)
    for ref in args.containers:
        act(engine, ref)
        print(ref, flush=True)
    return 0


def cmd_rm(args) -> int:
    return each_container(args, lambda engine, ref: engine.remove_container(ref, force=args.force))


def cmd_commit(args) -> int:
    image = engine_for(args).commit(args.container, args.reference, args.change, args.message)
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


def cmd_pull(args) -> int:
    engine = engine_for(args)
    if is_remote(engine):
        return remote_progress(engine.pull(args.image), args.quiet)
    from .registry import progress
    result = engine.pull(args.image, progress.for_terminal(args.quiet))
    if args.quiet:
        print(result.reference)
        return 0
    print(f"Status: Downloaded {result.image.name}: fetched {human_size(result.fetched_bytes)} "
          f"in {len(result.fetched_layers)} layer(s), reused {human_size(result.reused_bytes)} "
          f"in {len(result.reused_layers)} already here")
    return 0


def cmd_push(args) -> int:
    engine = engine_for(args)
    if is_remote(engine):
        return remote_progress(engine.push(args.image), args.quiet, quiet_line=False)
    from .registry import progress
    result = engine.push(args.image, progress.for_terminal(args.quiet))
    if not args.quiet:
        print(f"Pushed {result.reference}: {len(result.pushed)} blob(s) uploaded "
              f"({human_size(result.pushed_bytes)}), {len(result.existing)} already there, "
              f"{len(result.mounted)} mounted from another repository")
    return 0


def remote_progress(messages, quiet: bool, quiet_line: bool = True) -> int:
    """Print a daemon's pull or push progress stream as lines (the docker CLI's output
    when it is not a terminal); ``-q``: only the image's name at the end (pull)."""
    from .daemon.client import progress_line
    last = None
    for message in messages:
        line = progress_line(message)
        if line is None:
            continue
        last = line
        if not quiet:
            print(line, flush=True)
    if quiet and quiet_line and last and " for " in last:
        print(last.rpartition(" for ")[2])  # "Status: Downloaded newer image for NAME"
    return 0


def cmd_login(args) -> int:
    import getpass

    from .registry import auth, client
    server = args.server or client.DOCKER_HUB
    username = args.username or input("Username: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = args.password or getpass.getpass("Password: ")
    credentials = auth.Credentials(username, password)
    with client.Registry(server, credentials=credentials) as registry:
        registry.ping()   # a wrong password fails here, before anything is saved
    path = auth.save_credentials(server, credentials)
    print(f"Login Succeeded (saved in {path}, readable by you only)")
    return 0


def cmd_logout(args) -> int:
    from .registry import auth, client
    server = args.server or client.DOCKER_HUB
    if auth.forget_credentials(server):
        print(f"Removing login credentials for {server}")
    else:
        print(f"Not logged in to {server}")
    return 0


def daemon_arguments(command) -> None:
    from . import daemon
    daemon.arguments(command)


def cmd_daemon(args) -> int:
    from . import daemon
    return daemon.command(args)


def registry_arguments(command) -> None:
    from .registry import commands
    commands.describe(command)


def cmd_registry(args) -> int:
    from .registry import commands
    return commands.run(args)


def exercise_arguments(command) -> None:
    from . import exercises
    exercises.arguments(command)


def cmd_exercise(args) -> int:
    from . import exercises
    return exercises.run(args)


def network_arguments(command) -> None:
    from .network import commands
    commands.describe(command)


def cmd_network(args) -> int:
    from .network import commands
    return commands.run(args)


def bundle_arguments(bundle) -> None:
    bundle.add_argument("container")
    bundle.add_argument("directory", help="where to write config.json and rootfs/ "
                        "(new, or an empty directory)")


def cmd_bundle(args) -> int:
    from .engine import Engine
    from .runtime.bundle import write_bundle
    print(write_bundle(Engine(), args.container, args.directory))
    return 0


def cmd_rmi(args) -> int:
    engine = engine_for(args)
    for name in args.images:
        removed = engine.remove_image(name, force=args.force)
        print(f"Untagged: {name}")
        for digest in removed:
            print(f"Deleted: {digest}")
    return 0


def cmd_tag(args) -> int:
    engine = engine_for(args)
    if is_remote(engine):
        engine.tag(args.source, args.target)
        return 0
    store = engine.images
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
    from .errors import ContainerNotFound, ImageNotFound
    engine, found = engine_for(args), []
    for name in args.names:
        try:
            if is_remote(engine):  # docker's shapes, as the daemon answers them
                found.append(engine.image_inspect(name))
                continue
            image = engine.images.resolve(name)
            found.append({"Id": image.id, "RepoTags": [image.name],
                          "ManifestDigest": image.manifest_digest, "Config": image.run_config,
                          "RootFS": image.config.get("rootfs"), "History": image.config.get("history"),
                          "Layers": [layer.to_dict() for layer in image.layers],
                          "Size": sum(layer.size for layer in image.layers)})
        except ImageNotFound:
            try:
                found.append(engine.inspect(name))
            except ContainerNotFound:
                raise ContainerNotFound(f"no such image or container: {name}") from None
    print(json.dumps(found, indent=2))
    return 0


def cmd_system(args) -> int:
    from .engine import Engine
    if args.what == "prune":
        from . import system
        return system.command(Engine(), args.force)
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
    engine = engine_for(args)
    if is_remote(engine):
        images = [(i.name, i.id, i.size) for i in engine.image_list(args.all)]
    else:
        from .image.build import CACHE_REPOSITORY  # the build cache's intermediate images
        images = [(i.name, i.id, sum(layer.size for layer in i.layers))
                  for i in engine.images.images()
                  if args.all or not i.name.startswith(CACHE_REPOSITORY + ":")]
    if args.quiet:
        for _, image_id, _ in images:
            print(image_id.removeprefix("sha256:")[:12])
        return 0
    rows = [("REPOSITORY", "TAG", "IMAGE ID", "SIZE")]
    for name, image_id, size in images:
        repository, _, tag = name.rpartition(":")
        rows.append((repository, tag, image_id.removeprefix("sha256:")[:12], human_size(size)))
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
    if not getattr(args, "client_host", None):
        print(f"minirt {__version__}")
    else:  # as docker version: the client's, then the server's
        from .daemon.client import API_VERSION
        server = engine_for(args).version()
        print(f"Client: minirt {__version__}")
        print(f" API version:  {API_VERSION}")
        name = (server.get("Platform") or {}).get("Name", "minirtd")
        print(f"Server: {name} ({args.client_host})")
        print(f" Version:      {server.get('Version', '')}")
        print(f" API version:  {server.get('ApiVersion', '')} (minimum version "
              f"{server.get('MinAPIVersion', '')})")
        print(f" Os/Arch:      {server.get('Os', '')}/{server.get('Arch', '')}")
        print(f" Kernel:       {server.get('KernelVersion', '')}")
    return 0


# --- detached containers: docker's create, start, attach, stop, kill, restart, wait,
# logs, exec and top; the Engine does the work, its shims keep the containers.
def create_arguments(create) -> None:
    run_arguments(create)


def container_list(parser) -> None:
    parser.add_argument("containers", nargs="+", metavar="CONTAINER")


def start_arguments(start) -> None:
    start.add_argument("-a", "--attach", action="store_true",
                       help="attach to its output (and wait for it, exiting with its status)")
    start.add_argument("-i", "--interactive", action="store_true", help="attach stdin too")
    container_list(start)


def attach_arguments(attach) -> None:
    attach.add_argument("--no-stdin", action="store_true", help="do not attach stdin")
    attach.add_argument("container")


def stop_arguments(stop) -> None:
    stop.add_argument("-t", "--time", type=float, default=10,
                      help="seconds to wait after SIGTERM before SIGKILL (default 10)")
    container_list(stop)


def kill_arguments(kill) -> None:
    kill.add_argument("-s", "--signal", default="KILL", help="signal to send (default KILL)")
    container_list(kill)


def logs_arguments(logs) -> None:
    logs.add_argument("-f", "--follow", action="store_true", help="follow until it stops")
    logs.add_argument("-n", "--tail", default="all", help="lines from the end (default all)")
    logs.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    logs.add_argument("container")


def exec_arguments(exec_) -> None:
    import argparse
    exec_.add_argument("-d", "--detach", action="store_true", help="run it in the background")
    exec_.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    exec_.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    exec_.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                       help="set an environment variable")
    exec_.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside it")
    exec_.add_argument("container")
    exec_.add_argument("command", nargs=argparse.REMAINDER)


def container_options(args) -> dict:
    """``run``/``create`` flags as ``Engine.create_spec`` keywords."""
    return dict(name=args.name, hostname=args.hostname, env=args.env, workdir=args.workdir,
                volumes=args.volume, memory=args.memory, cpus=args.cpus,
                pids_limit=args.pids_limit, storage=args.storage, network=args.network,
                ip=args.ip, publish=args.publish, dns=args.dns, **security_options(args))


def security_options(args) -> dict:
    """``run``/``create``'s hardening flags as ``Engine.create_spec`` keywords."""
    return dict(user=args.user, read_only=args.read_only, cap_add=args.cap_add,
                cap_drop=args.cap_drop, security_opt=args.security_opt,
                privileged=args.privileged, ulimits=args.ulimit)


def cmd_create(args, start: bool = False) -> int:
    """``docker create`` (and ``docker run -d``: create, then start): print the full id."""
    engine = engine_for(args)
    container_id = engine.create(
        args.image, args.command, tty=args.tty, stdin_open=args.interactive, remove=args.rm,
        notice=lambda text: print(f"minirt: {text}", file=sys.stderr), **container_options(args))
    if start:
        engine.start(container_id)
    print(container_id)
    return 0


def cmd_start(args) -> int:
    from .errors import UsageError
    if not args.attach:
        return each_container(args, lambda engine, ref: engine.start(ref))
    engine = engine_for(args)
    if len(args.containers) != 1:
        raise UsageError("start -a takes one container")
    return attach_session(engine, args.containers[0], args.interactive, start=True)


def cmd_attach(args) -> int:
    return attach_session(engine_for(args), args.container, not args.no_stdin)


def attach_session(engine, ref: str, interactive: bool, start: bool = False,
                   container: dict | None = None, proxy_signals: bool = False) -> int:
    """Connect to a container's stdio (then start it, with ``start``), copy its output to
    ours and our input to it until it exits; return its exit status. ``engine`` may be
    the daemon's: its attach is a hijacked connection carrying the same frames."""
    container = container or engine.find_container(ref)
    interactive = interactive and container.get("stdin", False)
    tty = bool(container.get("tty"))
    sock = engine.attach(container["id"])  # before start: nothing it prints is missed
    try:
        exit_code = exit_waiter(engine, container)
        if start:
            engine.start(container["id"])
        raw = tty and interactive and os.isatty(0)
        with terminal(engine.resize, container["id"], raw, sized=tty), \
                forwarded(engine, container["id"], proxy_signals and not raw):
            copy_streams(sock, tty, interactive)
        return exit_code()
    finally:
        sock.close()


def exit_waiter(engine, container: dict):
    """A function that returns the container's exit code, once it has exited; the
    wait is in place before this returns (so an exit right after start is not missed)."""
    if is_remote(engine):  # the daemon's wait; after an --rm container is gone, too
        return engine.wait_later(container["id"], "removed" if container.get("auto_remove")
                                 else "next-exit").code
    import threading
    codes = []

    def wait() -> None:
        try:
            codes.append(engine.wait(container["id"]))
        except MinirtError:
            pass
    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()

    def code() -> int:
        waiter.join()
        return codes[0] if codes else 0
    return code


class terminal:
    """With ``raw``: our terminal in raw mode while the container has it (keys, Ctrl-C
    too, go to the container's terminal as bytes). With ``sized``: the container's
    terminal gets our size now and again on each SIGWINCH, through ``resize(ref, h, w)``."""

    def __init__(self, resize, ref: str, raw: bool, sized: bool):
        self.resize, self.ref, self.raw = resize, ref, raw
        self.sized = sized and os.isatty(1)
        self.saved = self.previous = None

    def _send_size(self, *_) -> None:
        try:
            size = os.get_terminal_size(1)
            self.resize(self.ref, size.lines, size.columns)
        except (OSError, MinirtError):
            pass  # it has exited meanwhile

    def __enter__(self):
        if self.sized:
            import signal
            self._send_size()
            self.previous = signal.signal(signal.SIGWINCH, self._send_size)
        if self.raw:
            import termios
            import tty
            self.saved = termios.tcgetattr(0)
            tty.setraw(0)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            import termios
            termios.tcsetattr(0, termios.TCSADRAIN, self.saved)
        if self.previous is not None:
            import signal
            signal.signal(signal.SIGWINCH, self.previous)
        return False


class forwarded:
    """Signals sent to us (Ctrl-C, kill) go on to the container's PID 1, as ``minirt run``
    forwards them in direct mode and the docker CLI does (--sig-proxy)."""

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")

    def __init__(self, engine, ref: str, enabled: bool):
        self.engine, self.ref, self.enabled = engine, ref, enabled
        self.previous = {}

    def _forward(self, number, frame) -> None:
        try:
            self.engine.kill(self.ref, number)
        except MinirtError:
            pass  # it has exited meanwhile

    def __enter__(self):
        if self.enabled:
            import signal
            for name in self.NAMES:
                number = getattr(signal, name)
                self.previous[number] = signal.signal(number, self._forward)
        return self

    def __exit__(self, *exc):
        import signal
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        return False


def copy_streams(sock, tty: bool, interactive: bool) -> None:
    """Our stdin to ``sock`` (with ``interactive``), its output to our stdout and stderr,
    until it closes: raw bytes with a terminal, else Docker's frames
    ([stream, 0, 0, 0, big-endian length] + bytes), stream 2 being stderr."""
    import selectors
    import socket
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        if interactive:
            selector.register(0, selectors.EVENT_READ)
        buffer = b""
        while True:
            for key, _ in selector.select():
                if key.fileobj == 0:
                    data = os.read(0, 4096)
                    if data:
                        sock.sendall(data)
                    else:
                        selector.unregister(0)
                        if not tty:
                            sock.shutdown(socket.SHUT_WR)  # closes its stdin
                    continue
                data = sock.recv(65536)
                if not data:
                    return
                if tty:
                    os.write(1, data)
                    continue
                buffer += data
                while len(buffer) >= 8 and \
                        len(buffer) >= 8 + (size := int.from_bytes(buffer[4:8], "big")):
                    os.write(2 if buffer[0] == 2 else 1, buffer[8:8 + size])
                    buffer = buffer[8 + size:]


def cmd_stop(args) -> int:
    return each_container(args, lambda engine, ref: engine.stop(ref, timeout=args.time))


def cmd_restart(args) -> int:
    return each_container(args, lambda engine, ref: engine.restart(ref, timeout=args.time))


def cmd_kill(args) -> int:
    return each_container(args, lambda engine, ref: engine.kill(ref, args.signal))


def cmd_wait(args) -> int:
    engine = engine_for(args)
    for ref in args.containers:
        print(engine.wait(ref), flush=True)
    return 0


def cmd_logs(args) -> int:
    from .errors import UsageError
    tail = None if args.tail == "all" else args.tail
    if tail is not None and not tail.lstrip("-").isdigit():
        raise UsageError(f"invalid --tail {args.tail!r}: use a number or all")
    tail = None if tail is None or int(tail) < 0 else int(tail)
    for stream, data in engine_for(args).logs(args.container, follow=args.follow, tail=tail,
                                              timestamps=args.timestamps):
        out = sys.stderr.buffer if stream == "stderr" else sys.stdout.buffer
        out.write(data)
        out.flush()  # keeps stdout and stderr lines in the container's order
    return 0


def cmd_exec(args) -> int:
    from .errors import UsageError
    if not args.command:
        raise UsageError("exec needs a command: minirt exec CONTAINER COMMAND [ARG...]")
    if args.tty and args.interactive and not os.isatty(0) and not args.detach:
        print("minirt: the input device is not a TTY", file=sys.stderr)
        return 125
    if getattr(args, "client_host", None):
        return remote_exec(engine_for(args), args)
    from .engine import Engine
    from .runtime.stdio import Passthrough, Terminal
    stdio = Terminal(args.interactive) if args.tty and not args.detach else \
        Passthrough(args.interactive)
    return Engine().exec(args.container, args.command, env=args.env, workdir=args.workdir,
                         tty=args.tty, detach=args.detach, stdio=stdio)


def remote_exec(engine, args) -> int:
    """``docker exec`` through the daemon: create the exec, start it on a hijacked
    connection (its stdio), then ask the daemon for its exit code."""
    size = None
    if args.tty and os.isatty(1):
        terminal_size = os.get_terminal_size(1)
        size = (terminal_size.lines, terminal_size.columns)
    exec_id = engine.exec_create(args.container, args.command, env=args.env,
                                 workdir=args.workdir, tty=args.tty, stdin=args.interactive,
                                 size=size)
    if args.detach:
        engine.exec_start(exec_id, detach=True)
        return 0
    sock = engine.exec_start(exec_id, tty=args.tty)
    try:
        raw = args.tty and args.interactive and os.isatty(0)
        with terminal(lambda _, h, w: engine.exec_resize(exec_id, h, w), exec_id, raw,
                      sized=args.tty):
            copy_streams(sock, args.tty, args.interactive)
    finally:
        sock.close()
    code = engine.exec_inspect(exec_id).get("ExitCode")
    return 126 if code is None else code


def cmd_top(args) -> int:
    table = engine_for(args).top(args.container)
    print_table([table["Titles"]] + table["Processes"])
    return 0


def container_status(c: dict) -> str:
    """docker ps's STATUS: ``Created``, ``Up 5 seconds``, ``Exited (0) 3 minutes ago``."""
    from .runtime.jsonlog import parse_rfc3339
    state = c["state"]
    if c["running"]:
        started = parse_rfc3339(state.get("started_at", ""))
        return "Up" + (f" {duration(started)}" if started else "")
    if state.get("status") != "exited":
        return "Created"
    code = state.get("exit_code")
    finished = parse_rfc3339(state.get("finished_at", ""))
    return f"Exited ({'unknown' if code is None else code})" + (
        f" {duration(finished)} ago" if finished else "")


def duration(since: float) -> str:
    import time
    seconds = max(0, int(time.time() - since))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''}"
    return "Less than a second" if seconds < 1 else f"{seconds} second{'s' if seconds > 1 else ''}"


# name: (how to describe its arguments, what runs it, one-line help)
COMMANDS = {
    "run": (run_arguments, cmd_run, "run a command in a new container"),
    "ps": (ps_arguments, cmd_ps, "list containers"),
    "create": (create_arguments, cmd_create, "create a container (started later by start)"),
    "start": (start_arguments, cmd_start, "start created or stopped containers"),
    "attach": (attach_arguments, cmd_attach, "attach to a running container's stdio"),
    "stop": (stop_arguments, cmd_stop, "stop containers: SIGTERM, then SIGKILL after -t"),
    "restart": (stop_arguments, cmd_restart, "stop, then start containers"),
    "kill": (kill_arguments, cmd_kill, "send a signal (default KILL) to containers"),
    "wait": (container_list, cmd_wait, "wait until containers stop; print their exit codes"),
    "logs": (logs_arguments, cmd_logs, "a container's output (json-file log)"),
    "exec": (exec_arguments, cmd_exec, "run a command in a running container"),
    "top": (one_container, cmd_top, "a container's processes"),
    "rm": (rm_arguments, cmd_rm, "remove containers"),
    "images": (images_arguments, cmd_images, "list local images"),
    "commit": (commit_arguments, cmd_commit, "make a new image from a container's changes"),
    "diff": (one_container, cmd_diff, "show what a container added, changed, deleted"),
    "export": (export_arguments, cmd_export, "a container's filesystem as a tar"),
    "build": (build_arguments, cmd_build, "build an image from a Dockerfile"),
    "builder": (builder_arguments, cmd_builder, "builder prune: forget the build cache"),
    "save": (save_arguments, cmd_save, "images to a tar (docker save format, or OCI)"),
    "load": (load_arguments, cmd_load, "images from a tar or an OCI layout"),
    "pull": (transfer_arguments, cmd_pull, "download an image from a registry"),
    "push": (transfer_arguments, cmd_push, "upload an image to a registry"),
    "login": (login_arguments, cmd_login, "log in to a registry (saved with mode 0600)"),
    "logout": (server_argument, cmd_logout, "forget a registry login"),
    "rmi": (rmi_arguments, cmd_rmi, "remove images"),
    "tag": (tag_arguments, cmd_tag, "give an image another name"),
    "history": (one_image, cmd_history, "the layers of an image"),
    "inspect": (inspect_arguments, cmd_inspect, "images or containers, as JSON"),
    "system": (system_arguments, cmd_system,
               "system df: disk used, and saved by sharing; system prune: remove what is unused"),
    "import": (import_arguments, cmd_import,
               "create an image from a flat root filesystem tarball"),
    "init": (no_arguments, cmd_init, "prepare the state directory and build busybox:latest "
             "from the host's static busybox (no network)"),
    "stats": (stats_arguments, cmd_stats, "live resource use of running containers"),
    "bench": (bench_arguments, cmd_bench, "measure containers beside a VM, write figures"),
    "lab": (lab_arguments, cmd_lab, "instructor check: run every notebook, write HTML"),
    "doctor": (doctor_arguments, cmd_doctor, "what this machine allows, and its privilege tier"),
    "version": (no_arguments, cmd_version, "show the minirt version"),
    "daemon": (daemon_arguments, cmd_daemon,
               "serve the Docker Engine API on a Unix socket (minirtd)"),
    "registry": (registry_arguments, cmd_registry,
                 "the lab's local registry (CNCF Distribution): start, stop, status"),
    "network": (network_arguments, cmd_network, "networks: create, ls, rm, inspect"),
    "exercise": (exercise_arguments, cmd_exercise,
                 "exercises: copy minirt, replace one piece, check it (list, start, check)"),
    "bundle": (bundle_arguments, cmd_bundle, "write a container as an OCI bundle (runc run)"),
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
