"""``minirt build``: an image from a Dockerfile, one step at a time, with a cache.

A Dockerfile is a recipe for an image: it starts ``FROM`` an existing image
(or ``scratch``, nothing at all) and lists instructions, each applied on top
of the image the previous one produced. Every step leaves an image behind:

* ``RUN cmd`` starts a container from the current image, runs ``/bin/sh -c cmd``
  in it (or the JSON form's argv as is), and *commits* what the command changed
  (the container's overlayfs upper dir) as **one new layer**;
* ``COPY src... dest`` and ``ADD`` (``ADD`` also extracts a local tar) put files
  from the *build context* (the directory given to ``minirt build``) into one
  new layer;
* ``ENV``, ``WORKDIR``, ``CMD``, ``ENTRYPOINT``, ``LABEL``, ``USER`` change only
  the image config: no layer, just a history entry marked ``empty_layer``, as
  docker writes it.

**The cache.** A step's result depends only on the image it starts from, the
instruction, and, for ``COPY``/``ADD``, the files copied. So each step is keyed
by (parent image ID, instruction text, sha256 of the copied files' paths,
modes, owners and contents), and a step whose key was seen before reuses the
image it made, printing ``---> Using cache``: an unchanged rebuild reuses every
layer and gives the same image ID. Change one copied file and its ``COPY``
step misses; every later step then has a new parent, so it misses too, while
the earlier steps still hit. (File times are not part of the key: copied files
get a fixed mtime, so equal content gives an equal layer, shared on disk.)

The cache is ``<state root>/build-cache.json``, a map from key to the manifest
digest of the step's image, written atomically under a lock. Each step's image
is also tagged ``minirt-build-cache:<key>`` so that garbage collection
(``rmi``) keeps it; ``prune_cache`` (``minirt builder prune``) drops those tags
and what only they kept. An entry whose image's blobs are gone is ignored.

Not supported (a clear error naming the line): ARG, EXPOSE, VOLUME, SHELL,
HEALTHCHECK, ONBUILD, STOPSIGNAL, MAINTAINER, multi-stage builds (a second
FROM), ``COPY --from/--chown/--chmod``, ``ADD`` of a URL, ``.dockerignore``.
``USER`` is recorded in the config but minirt runs every command as root (its
runtime does not switch users), RUN steps included.

Reference: https://docs.docker.com/reference/dockerfile/
"""

import glob
import hashlib
import json
import os
import re
import shlex
import stat
import tempfile
import time

from ..errors import BuildError, MinirtError, UsageError
from ..paths import atomic_write, remove_tree
from ..record import Record
from . import layer as layers
from .store import Image, LayerInfo

SUPPORTED = ("FROM", "RUN", "COPY", "ADD", "ENV", "WORKDIR", "CMD", "ENTRYPOINT", "LABEL", "USER")
KNOWN_UNSUPPORTED = ("ARG", "EXPOSE", "VOLUME", "SHELL", "HEALTHCHECK", "ONBUILD", "STOPSIGNAL",
                     "MAINTAINER")
CACHE_REPOSITORY = "minirt-build-cache"
RUN_VIEW_REPOSITORY = "minirt-build-run"
CACHE_FILE = "build-cache.json"
MAX_SYMLINKS = 40
JSON_FORMS = ("RUN", "CMD", "ENTRYPOINT", "COPY", "ADD")  # may be given as a JSON list
MAX_JSON_DEPTH = 100  # brackets nested deeper than this: refused, not parsed


class Instruction(Record):
    """One Dockerfile instruction: its keyword, its arguments and where it starts."""

    __slots__ = ("keyword", "arguments", "line", "text")

    def __init__(self, keyword: str, arguments: str, line: int, text: str):
        self.keyword = keyword      # upper case: "RUN"
        self.arguments = arguments  # the rest, continuation lines joined
        self.line = line            # 1-based line number where it starts
        self.text = text            # "RUN echo hi", as shown in "Step N/M : ..."


class BuildResult(Record):
    """What ``build`` returns: the image, and for each step whether the cache served it."""

    __slots__ = ("image", "steps")

    def __init__(self, image: Image, steps: list[dict]):
        self.image = image
        self.steps = steps  # [{"step": 1, "instruction": "FROM busybox", "cached": False,
        #                       "id": "sha256:..."}, ...]

    @property
    def id(self) -> str:
        return self.image.id


# --- parsing -----------------------------------------------------------------------
def parse(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions; refuse what minirt does not support.

    Comment lines (``#`` first) are dropped, even inside a continuation; a line
    ending in ``\\`` continues on the next one. Every instruction is checked
    here, before any step runs, so a bad line costs nothing.
    """
    instructions, pending, start = [], None, 0
    for number, line in enumerate(_lines(text), 1):
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and pending is None):
            continue  # comments and parser directives (# escape=...): \ is the escape
        if not stripped:
            continue  # an empty line inside a continuation (docker allows it)
        continued = re.search(r"\\[ \t]*$", line) is not None
        body = re.sub(r"\\[ \t]*$", "", line) if continued else line
        if pending is None:
            pending, start = body.lstrip(), number
        else:
            pending += body
        if not continued:
            instructions.append(_instruction(pending, start))
            pending = None
    if pending is not None:
        instructions.append(_instruction(pending, start))
    if not instructions:
        raise UsageError("the Dockerfile has no instructions: start it with FROM")
    if instructions[0].keyword != "FROM":
        first = instructions[0]
        raise UsageError(f"Dockerfile line {first.line}: the first instruction must be FROM, "
                         f"not {first.keyword}")
    for later in instructions[1:]:
        if later.keyword == "FROM":
            raise UsageError(f"Dockerfile line {later.line}: a second FROM (a multi-stage build) "
                             "is not supported by minirt build")
    return instructions


def _lines(text: str) -> list[str]:
    """Lines as docker's parser splits them: at ``\\n`` only (``str.splitlines`` also breaks
    at ``\\r``, ``\\x0c``, ``\\u2028``...), a CRLF file's ``\\r`` and a UTF-8 BOM dropped."""
    return [line.rstrip("\r") for line in text.removeprefix("\ufeff").split("\n")]


def _instruction(text: str, line: int) -> Instruction:
    keyword, arguments = (re.split(r"\s+", text.strip(), maxsplit=1) + [""])[:2]
    keyword, arguments = keyword.upper(), arguments.strip()
    if keyword not in SUPPORTED:
        what = "is not supported by minirt build" if keyword in KNOWN_UNSUPPORTED else \
            "is not a Dockerfile instruction minirt knows"
        raise UsageError(f"Dockerfile line {line}: {keyword} {what} (supported: "
                         f"{', '.join(SUPPORTED)})")
    if not arguments:
        raise UsageError(f"Dockerfile line {line}: {keyword} needs arguments")
    if keyword in JSON_FORMS and _nesting(arguments) > MAX_JSON_DEPTH:
        raise UsageError(f"Dockerfile line {line}: {keyword}'s brackets nest more than "
                         f"{MAX_JSON_DEPTH} deep: not an exec form (a flat JSON list of strings)")
    if keyword in ("COPY", "ADD"):
        flag = arguments.split()[0]
        if flag.startswith("--"):  # --chown, --chmod, --from, --link: flags come first
            raise UsageError(f"Dockerfile line {line}: {keyword} {flag.split('=')[0]} is not "
                             "supported by minirt build")
        sources, _ = _copy_arguments(Instruction(keyword, arguments, line, ""))
        if keyword == "ADD" and any(re.match(r"^[a-z]+://|^git@", s) for s in sources):
            raise UsageError(f"Dockerfile line {line}: ADD from a URL is not supported: download "
                             "the file into the build context and ADD or COPY it")
    if keyword == "FROM":
        words = arguments.split()
        if words[0].startswith("--"):
            raise UsageError(f"Dockerfile line {line}: FROM {words[0]} is not supported")
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
            raise UsageError(f"Dockerfile line {line}: use FROM IMAGE (or FROM IMAGE AS NAME)")
    return Instruction(keyword, arguments, line, f"{keyword} {arguments}")


def _json_form(arguments: str) -> list[str] | None:
    """The exec (JSON array) form's list, or None for the shell form (as docker decides)."""
    if not arguments.startswith("[") or _nesting(arguments) > 1:
        return None  # a list inside the list is no exec form: and json.loads would recurse
    try:
        value = json.loads(arguments)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _nesting(text: str) -> int:
    """How deep ``[`` and ``{`` nest in ``text`` read as JSON (outside strings), counted in a
    loop: ``json.loads`` recurses once per level, and ``[[[[...`` would exhaust the stack."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _copy_arguments(instruction: Instruction) -> tuple[list[str], str]:
    words = _json_form(instruction.arguments)
    if words is None:
        words = instruction.arguments.split()
    if len(words) < 2:
        raise UsageError(f"Dockerfile line {instruction.line}: {instruction.keyword} needs a "
                         "source and a destination")
    return words[:-1], words[-1]


# --- variables: $VAR and ${VAR} in ENV, WORKDIR, COPY, ADD, LABEL, USER ------------------
_VARIABLE = re.compile(r"\\\$|\$\{(\w+)(?::([-+])([^}]*))?\}|\$(\w+)")


def expand(text: str, env: dict[str, str]) -> str:
    """Docker's substitution: ``$V``, ``${V}``, ``${V:-dflt}``, ``${V:+alt}``; ``\\$`` escapes."""
    def replace(match):
        if match.group(0) == "\\$":
            return "$"
        name = match.group(1) or match.group(4)
        value = env.get(name, "")
        if match.group(2) == "-":
            return value or match.group(3)
        if match.group(2) == "+":
            return match.group(3) if value else ""
        return value
    return _VARIABLE.sub(replace, text)


def _pairs(arguments: str, keyword: str, line: int) -> list[tuple[str, str]]:
    """``K=V K2="v 2"`` or the old ``K V`` form (the whole rest is the value)."""
    first = arguments.split(None, 1)[0]
    if "=" not in first:  # docker splits the old form at the first run of spaces or tabs
        key, value = (re.split(r"[ \t\v\f\r]+", arguments, maxsplit=1) + [""])[:2]
        if not value:
            raise UsageError(f"Dockerfile line {line}: {keyword} {key} needs a value: use "
                             f"{keyword} {key}=VALUE (or {keyword} {key} VALUE)")
        return [(key, value)]
    try:
        words = shlex.split(arguments)
    except ValueError as e:
        raise UsageError(f"Dockerfile line {line}: {keyword}: {e}") from None
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UsageError(f"Dockerfile line {line}: {keyword} {word!r}: use KEY=VALUE")
        pairs.append((key, value))
    return pairs


# --- the build ---------------------------------------------------------------------
def build(engine, context_dir: str, dockerfile: str | None = None, tag: str | None = None,
          no_cache: bool = False, progress=print) -> BuildResult:
    """Build the Dockerfile (default ``CONTEXT/Dockerfile``) and tag the result ``tag``.

    ``progress`` gets one line at a time (``Step 2/5 : RUN ...``, ``---> Using
    cache``, the RUN's output). ``no_cache`` runs every step anew (their
    results still become cache entries for later builds).
    """
    from . import reference
    if tag is not None:
        reference.parse(tag)  # a bad tag fails now, not after the whole build
    if not os.path.isdir(context_dir):
        raise UsageError(f"the build context {context_dir!r} is not a directory")
    context = os.path.realpath(context_dir)
    path = dockerfile or os.path.join(context_dir, "Dockerfile")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise UsageError(f"no Dockerfile at {path}: add one, or name it with -f") from None
    instructions = parse(text)
    return Builder(engine, context, no_cache, progress).run(instructions, tag)


class Builder:
    def __init__(self, engine, context: str, no_cache: bool, progress):
        self.engine, self.store = engine, engine.images
        self.context, self.no_cache = context, no_cache
        self.progress = progress or (lambda line: None)
        self.cache = BuildCache(engine.root)
        self.current: Image | None = None    # None: scratch, nothing yet
        self.cmd_set = False                 # CMD given in this Dockerfile (ENTRYPOINT keeps it)

    def run(self, instructions: list[Instruction], tag: str | None) -> BuildResult:
        steps = []
        total = len(instructions)
        for number, instruction in enumerate(instructions, 1):
            self.progress(f"Step {number}/{total} : {instruction.text}")
            try:
                cached = self.step(instruction,
                                   f"step {number}/{total} ({_short(instruction.text)})")
            except BuildError:
                raise
            except MinirtError as e:
                if isinstance(e, UsageError) and str(e).startswith("Dockerfile line"):
                    raise
                raise BuildError(f"step {number}/{total} ({_short(instruction.text)}) failed: "
                                 f"{e}") from None
            if cached:
                self.progress(" ---> Using cache")
            self.progress(f" ---> {short_id(self.current)}")
            steps.append({"step": number, "instruction": instruction.text, "cached": cached,
                          "id": self.current.id if self.current else None})
        if self.current is None:
            raise BuildError("FROM scratch and nothing else: there is no image to tag")
        self.progress(f"Successfully built {short_id(self.current)}")
        image = self.current
        if tag is not None:
            self.store.tag(tag, image.manifest_digest)
            image = self.store.resolve(tag)
            self.progress(f"Successfully tagged {image.name}")
        return BuildResult(image, steps)

    # --- one step: returns True when the cache served it ------------------------
    def step(self, instruction: Instruction, where: str) -> bool:
        keyword = instruction.keyword
        if keyword == "FROM":
            name = instruction.arguments.split()[0]
            self.current = None if name == "scratch" else self.store.resolve(name)
            return False
        if keyword in ("COPY", "ADD"):
            return self.copy(instruction)
        key = self._key(instruction.text)
        if self._use_cache(key):
            if keyword == "CMD":
                self.cmd_set = True
            return True
        if keyword == "RUN":
            self.run_step(instruction, key, where)
        else:
            self.config_step(instruction, key)
        return False

    def _key(self, text: str, content: str = "") -> str:
        parent = self.current.id if self.current else "scratch"
        return hashlib.sha256(json.dumps([parent, text, content]).encode()).hexdigest()

    def _use_cache(self, key: str) -> bool:
        if self.no_cache:
            return False
        manifest = self.cache.lookup(key, self.store)
        if manifest is None:
            return False
        cache_tag = f"{CACHE_REPOSITORY}:{key}"
        try:
            image = self.store.resolve(cache_tag)
        except MinirtError:
            image = None
        if image is None or image.manifest_digest != manifest:
            self.store.tag(cache_tag, manifest)  # so garbage collection keeps it again
            image = self.store.resolve(cache_tag)
        self.current = image
        return True

    def _record(self, key: str, image: Image, text: str) -> None:
        self.current = image
        self.cache.store(key, image.manifest_digest, text)

    # --- config-only steps --------------------------------------------------------
    def config_step(self, instruction: Instruction, key: str) -> None:
        run_config = dict(self.current.run_config) if self.current else {}
        env = _env_dict(run_config)
        keyword, arguments, line = instruction.keyword, instruction.arguments, instruction.line
        if keyword == "ENV":
            pairs = [(k, expand(v, env)) for k, v in _pairs(arguments, "ENV", line)]
            current = list(run_config.get("Env") or [])
            for name, value in pairs:
                entry = f"{name}={value}"
                at = [i for i, e in enumerate(current) if e.split("=", 1)[0] == name]
                if at:
                    current[at[0]] = entry
                else:
                    current.append(entry)
            run_config["Env"] = current
        elif keyword == "LABEL":
            labels = dict(run_config.get("Labels") or {})
            labels.update((k, expand(v, env)) for k, v in _pairs(arguments, "LABEL", line))
            run_config["Labels"] = labels
        elif keyword == "WORKDIR":
            run_config["WorkingDir"] = os.path.normpath(os.path.join(
                run_config.get("WorkingDir") or "/", expand(arguments, env)))
        elif keyword == "USER":
            run_config["User"] = expand(arguments, env)
        elif keyword in ("CMD", "ENTRYPOINT"):
            argv = _json_form(arguments)
            if argv is None:
                argv = ["/bin/sh", "-c", arguments]
            if keyword == "CMD":
                run_config["Cmd"] = argv
                self.cmd_set = True
            else:
                run_config["Entrypoint"] = argv
                if not self.cmd_set:
                    run_config.pop("Cmd", None)  # docker: ENTRYPOINT resets an inherited CMD
        config = self._base_config()
        config["config"] = run_config
        config["history"].append({"created": _now(), "created_by": instruction.text,
                                  "empty_layer": True})
        config["created"] = config["history"][-1]["created"]
        image = self.store.add_image(f"{CACHE_REPOSITORY}:{key}", config,
                                     list(self.current.layers) if self.current else [])
        self._record(key, image, instruction.text)

    def _base_config(self) -> dict:
        if self.current is not None:
            config = json.loads(json.dumps(self.current.config))
            config.setdefault("history", [])
            config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
            return config
        from .platform import oci_architecture
        return {"architecture": oci_architecture(), "os": "linux", "config": {},
                "rootfs": {"type": "layers", "diff_ids": []}, "history": []}

    # --- RUN -------------------------------------------------------------------------
    def run_step(self, instruction: Instruction, key: str, where: str) -> None:
        from ..runtime import rootfs
        if self.current is None or not self.current.layers:
            raise BuildError(f"{where}: RUN needs a base image with a shell and the command; "
                             "FROM scratch has no files")
        if not rootfs.overlay_supported():
            raise BuildError(f"{where}: RUN needs overlayfs, which this kernel lacks")
        argv = _json_form(instruction.arguments)
        shown = "RUN " + (json.dumps(argv) if argv is not None
                          else f"/bin/sh -c {instruction.arguments}")
        if argv is None:
            argv = ["/bin/sh", "-c", instruction.arguments]
        cache_tag = f"{CACHE_REPOSITORY}:{key}"
        run_ref, view_tag = self.current.name, None
        if self.current.run_config.get("Entrypoint"):
            # docker's RUN ignores the image's ENTRYPOINT; `run` would prepend it, so the
            # step runs from a view of the same layers with no Entrypoint.
            view_tag = f"{RUN_VIEW_REPOSITORY}:{key}"
            view = json.loads(json.dumps(self.current.config))
            view["config"] = {k: v for k, v in self.current.run_config.items() if k != "Entrypoint"}
            run_ref = self.store.add_image(view_tag, view, list(self.current.layers)).name
        name = f"minirt-build-{os.urandom(6).hex()}"
        try:
            try:
                result = self.engine.run(run_ref, argv, remove=False, capture=True, name=name,
                                         storage="overlay")
            except MinirtError as e:
                self._remove_container(name)
                raise BuildError(f"{where} could not start: {e}") from None
            try:
                self.progress(f" ---> Running in {result.container_id[:12]}")
                for text in (result.output, result.errors):
                    for line in text.splitlines():
                        self.progress(line)
                if result.exit_code != 0:
                    output = (result.output + result.errors).strip()
                    tail = "\n".join(output.splitlines()[-20:])
                    raise BuildError(f"{where} failed: the command returned a non-zero code: "
                                     f"{result.exit_code}" + (f"\n{tail}" if tail else ""))
                committed = self.engine.commit(result.container_id, cache_tag,
                                               message=instruction.text)
            finally:
                self.engine.remove_container(result.container_id, force=True)
        finally:
            if view_tag:
                try:
                    self.store.untag(view_tag)
                except MinirtError:
                    pass
        # commit wrote the container's Cmd (our /bin/sh -c ...) and Env into the config:
        # the step's image keeps the parent's config, plus one history entry.
        config = self._base_config()
        config["config"] = dict(self.current.run_config)
        config["rootfs"]["diff_ids"] = [layer.diff_id for layer in committed.layers]
        created = committed.config["history"][-1].get("created") or _now()
        config["history"].append({"created": created, "created_by": shown})
        config["created"] = created
        image = self.store.add_image(cache_tag, config, list(committed.layers))
        self._record(key, image, instruction.text)

    def _remove_container(self, name: str) -> None:
        try:
            self.engine.remove_container(name, force=True)
        except MinirtError:
            pass

    # --- COPY and ADD -----------------------------------------------------------------
    def copy(self, instruction: Instruction) -> bool:
        """Lay the files out in a temp dir at their destination paths; hash; pack if new."""
        env = _env_dict(self.current.run_config if self.current else {})
        sources, dest = _copy_arguments(instruction)
        sources = [expand(s, env) for s in sources]
        dest = expand(dest, env)
        workdir = (self.current.run_config.get("WorkingDir") if self.current else None) or "/"
        dest_is_dir = dest.endswith("/") or dest.endswith("/.")
        dest = os.path.normpath(os.path.join(workdir, dest))
        image_layers = self.store.unpacked_layers(self.current) if self.current else []
        files = []
        for source in sources:
            files += self._context_paths(source, instruction)
        if len(files) > 1 and not dest_is_dir:
            raise BuildError(f"Dockerfile line {instruction.line}: {instruction.keyword} with "
                             "more than one source needs a destination directory ending in /")
        tmp = tempfile.mkdtemp(prefix="minirt-build-", dir=self.engine.root)
        try:
            tree = _Tree(tmp, image_layers)
            for path in files:
                real = os.path.realpath(path)  # a top-level symlink is followed (in the context)
                is_tar = instruction.keyword == "ADD" and os.path.isfile(real) and _is_tar(real)
                into_dir = dest_is_dir or os.path.isdir(real) or is_tar or \
                    tree.image_has_dir(dest)
                if into_dir:
                    target = tree.directory(dest)
                    if is_tar:
                        tree.extract(real, target)
                    elif os.path.isdir(real):
                        tree.copy_tree(real, target)
                    else:
                        tree.copy_entry(real, os.path.join(target, os.path.basename(path)))
                else:
                    parent = tree.directory(os.path.dirname(dest))
                    tree.copy_entry(real, os.path.join(parent, os.path.basename(dest)))
            tree.finish()
            key = self._key(instruction.text, tree.digest())
            if self._use_cache(key):
                return True
            image = self._add_layer(tmp, f"{CACHE_REPOSITORY}:{key}", instruction.text)
            self._record(key, image, instruction.text)
            return False
        finally:
            remove_tree(tmp)

    def _context_paths(self, source: str, instruction: Instruction) -> list[str]:
        relative = os.path.normpath(source.lstrip("/")) if source.strip("/") else "."
        if relative == ".." or relative.startswith("../"):
            raise BuildError(f"Dockerfile line {instruction.line}: {source!r} is outside the "
                             "build context")
        pattern = os.path.join(self.context, relative)
        matches = sorted(glob.glob(glob.escape(self.context) + "/" + relative)) \
            if glob.has_magic(relative) else ([pattern] if os.path.lexists(pattern) else [])
        if not matches:
            raise BuildError(f"Dockerfile line {instruction.line}: {instruction.keyword} failed: "
                             f"{source!r} not found in the build context {self.context}")
        for path in matches:
            real = os.path.realpath(path)
            if real != self.context and not real.startswith(self.context + os.sep):
                raise BuildError(f"Dockerfile line {instruction.line}: {source!r} leads outside "
                                 "the build context (a symlink?)")
        return matches

    def _add_layer(self, directory: str, name: str, created_by: str) -> Image:
        self.store.ensure_layout()
        blobs = os.path.join(self.store.layout, "blobs", "sha256")
        fd, blob_tmp = tempfile.mkstemp(dir=blobs, prefix=".tmp-")
        os.close(fd)
        try:
            digest, diff_id, size = layers.pack_directory(directory, blob_tmp, reproducible=False,
                                                          id_map=_rootless_id_map())
            os.chmod(blob_tmp, 0o444)
            os.rename(blob_tmp, self.store.blob_path(digest))
        except BaseException:
            os.unlink(blob_tmp)
            raise
        config = self._base_config()
        config["rootfs"]["diff_ids"].append(diff_id)
        config["history"].append({"created": _now(), "created_by": created_by})
        config["created"] = config["history"][-1]["created"]
        base = list(self.current.layers) if self.current else []
        return self.store.add_image(name, config, base + [LayerInfo(digest, diff_id, size)])


class _Tree:
    """The files of one COPY/ADD layer, laid out at their paths in the image.

    Copied entries belong to root (as docker's COPY without --chown) and get a
    fixed mtime, so the same content gives the same layer digest. A directory
    created only to hold them copies the image's own directory (mode, owner):
    a layer's directory entry overrides the lower one's metadata in overlayfs,
    so ``COPY x /tmp/`` must not turn /tmp's 1777 into 755. Directories on the
    destination path that are symlinks in the image are followed within the
    image (``/var/run`` -> ``/run``), as docker does.
    """

    def __init__(self, root: str, image_layers: list[str]):
        self.root, self.image_layers = root, image_layers
        self.owners: dict[str, tuple[int, int]] = {}  # relative path -> (uid, gid)

    # --- the image's view -------------------------------------------------------
    def lookup(self, relative: str):
        """(lstat, host path) of ``relative`` in the merged image, or None."""
        parts = [p for p in relative.split("/") if p]
        if not parts:  # the root directory itself
            return (os.lstat(self.image_layers[0]), self.image_layers[0]) if self.image_layers \
                else None
        for layer in self.image_layers:  # top first, as overlayfs looks
            hidden_below, missing = False, False
            for i in range(1, len(parts)):
                prefix = os.path.join(layer, *parts[:i])
                try:
                    st = os.lstat(prefix)
                except FileNotFoundError:
                    missing = True
                    break
                if _is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                    return None
                if layers.is_opaque(prefix):
                    hidden_below = True
            if not missing:
                path = os.path.join(layer, *parts)
                try:
                    st = os.lstat(path)
                    return None if _is_whiteout(st) else (st, path)
                except FileNotFoundError:
                    pass
            if hidden_below:
                return None
        return None

    def resolve(self, path: str, follow_last: bool) -> str:
        """``path`` with the image's symlinks followed (kept inside the image's root)."""
        pending = [p for p in path.split("/") if p]
        resolved, hops = [], 0
        while pending:
            name = pending.pop(0)
            if name == ".":
                continue
            if name == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = resolved + [name]
            if not pending and not follow_last:
                resolved = candidate
                break
            found = self.lookup("/".join(candidate))
            if found and stat.S_ISLNK(found[0].st_mode):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise BuildError(f"too many symlinks in the image on the way to {path}")
                target = os.readlink(found[1])
                if target.startswith("/"):
                    resolved = []
                pending = [p for p in target.split("/") if p] + pending
            else:
                resolved = candidate
        return "/".join(resolved)

    def image_has_dir(self, path: str) -> bool:
        found = self.lookup(self.resolve(path, follow_last=True))
        return bool(found) and stat.S_ISDIR(found[0].st_mode)

    # --- laying files out -----------------------------------------------------------
    def directory(self, path: str) -> str:
        """Make ``path`` (an image path) a directory in the tree; returns its host path."""
        relative = self.resolve(path, follow_last=True)
        current = self.root
        done = []
        for part in [p for p in relative.split("/") if p]:
            done.append(part)
            current = os.path.join(current, part)
            if os.path.lexists(current):
                if not os.path.isdir(current) or os.path.islink(current):
                    raise BuildError(f"cannot copy into /{'/'.join(done)}: a file is copied "
                                     "there too")
                continue
            found = self.lookup("/".join(done))
            if found and stat.S_ISDIR(found[0].st_mode):
                mode, owner = found[0].st_mode & 0o7777, (found[0].st_uid, found[0].st_gid)
            elif found:
                raise BuildError(f"cannot copy into /{'/'.join(done)}: it is a file in the image")
            else:
                mode, owner = 0o755, (0, 0)
            os.mkdir(current)
            os.chmod(current, mode)
            self.owners[current] = owner
        return current

    def copy_entry(self, source: str, target: str) -> None:
        """One file, symlink or (empty) directory from the context, owned by root."""
        st = os.lstat(source)
        if os.path.lexists(target):
            if stat.S_ISDIR(st.st_mode) and os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, st.st_mode & 0o7777)
                self.owners[target] = (0, 0)
                return
            if os.path.isdir(target) and not os.path.islink(target):
                remove_tree(target)
            else:
                os.unlink(target)
        if stat.S_ISREG(st.st_mode):
            with open(source, "rb") as src, open(target, "xb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            os.chmod(target, st.st_mode & 0o7777)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), target)
        elif stat.S_ISDIR(st.st_mode):
            os.mkdir(target)
            os.chmod(target, st.st_mode & 0o7777)
        else:
            raise BuildError(f"cannot copy {source}: only files, directories and symlinks "
                             "can be copied into an image")
        self.owners[target] = (0, 0)

    def copy_tree(self, source: str, target: str) -> None:
        """A context directory's contents (not the directory itself, as docker) into ``target``."""
        for directory, dirs, files in os.walk(source):
            dirs.sort()
            relative = os.path.relpath(directory, source)
            here = target if relative == "." else os.path.join(target, relative)
            links = [d for d in dirs if os.path.islink(os.path.join(directory, d))]
            for name in sorted(files + dirs):
                self.copy_entry(os.path.join(directory, name), os.path.join(here, name))
            dirs[:] = [d for d in dirs if d not in links]

    def extract(self, tar_path: str, target: str) -> None:
        """ADD of a local tar: minirt's safe unpacker, straight into ``target``."""
        with open(tar_path, "rb") as f:
            layers.unpack(f, target)
        for directory, dirs, files in os.walk(target):
            for name in dirs + files:
                path = os.path.join(directory, name)
                st = os.lstat(path)
                self.owners.setdefault(path, (st.st_uid, st.st_gid))  # the tar's owners stay

    def finish(self) -> None:
        """Owners as decided, and one fixed mtime everywhere (children before parents)."""
        for directory, dirs, files in os.walk(self.root, topdown=False):
            for name in files + dirs:
                path = os.path.join(directory, name)
                uid, gid = self.owners.get(path, (0, 0))
                if os.geteuid() == 0:  # without root they stay ours: packed as root (id_map)
                    os.lchown(path, uid, gid)
                os.utime(path, (layers.REPRODUCIBLE_MTIME,) * 2, follow_symlinks=False)

    def digest(self) -> str:
        """sha256 of every entry's path, type, mode, owner and content (or link target)."""
        sha = hashlib.sha256()
        for directory, dirs, files in os.walk(self.root):
            dirs.sort()
            for name in sorted(dirs + files):
                path = os.path.join(directory, name)
                st = os.lstat(path)
                relative = os.path.relpath(path, self.root)
                sha.update(f"{relative}\0{st.st_mode:o}\0{st.st_uid}:{st.st_gid}\0".encode())
                if stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as f:
                        while chunk := f.read(1 << 20):
                            sha.update(chunk)
                elif stat.S_ISLNK(st.st_mode):
                    sha.update(os.readlink(path).encode())
                sha.update(b"\0")
        return "sha256:" + sha.hexdigest()


class BuildCache:
    """``<root>/build-cache.json``: cache key -> manifest digest of the step's image."""

    def __init__(self, root: str):
        self.path = os.path.join(root, CACHE_FILE)

    def load(self) -> dict:
        try:
            with open(self.path, "rb") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def lookup(self, key: str, store) -> str | None:
        """The manifest digest for ``key``, if its manifest, config and layers are all stored."""
        entry = self.load().get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("manifest"), str):
            return None
        try:
            manifest = store.read_json(entry["manifest"])
            needed = [manifest["config"]["digest"]] + [d["digest"] for d in manifest["layers"]]
            if all(store.has_blob(d) for d in needed):
                return entry["manifest"]
        except (MinirtError, KeyError, TypeError):
            pass
        return None

    def store(self, key: str, manifest: str, instruction: str) -> None:
        import fcntl
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent builds: no lost entries
            data = self.load()
            data[key] = {"manifest": manifest, "instruction": instruction, "created": _now()}
            atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True).encode())

    def clear(self) -> None:
        for path in (self.path, self.path + ".lock"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _rootless_id_map():
    """Without root a COPY's files belong to the user, who is root in a rootless container:
    the layer records them as root (kernel/idmap.py), as a root build would."""
    if os.geteuid() == 0:
        return None
    from ..kernel import idmap
    return idmap.for_user()


def prune_cache(engine) -> list[str]:
    """``docker builder prune``: forget the cache, untag every step image, collect garbage.

    Images tagged by the user stay whole; returns the blob digests deleted.
    """
    store = engine.images
    for image in store.images():
        if image.name.split(":", 1)[0] in (CACHE_REPOSITORY, RUN_VIEW_REPOSITORY):
            store.untag(image.name)
    BuildCache(engine.root).clear()
    in_use = {layer for c in engine.containers() for layer in c["layers"]}
    return store.collect_garbage(in_use)


# --- small helpers ---------------------------------------------------------------------
def _env_dict(run_config: dict) -> dict[str, str]:
    return dict(e.split("=", 1) for e in run_config.get("Env") or [] if "=" in e)


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_tar(path: str) -> bool:
    import tarfile
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def short_id(image: Image | None) -> str:
    return image.id.removeprefix("sha256:")[:12] if image else "scratch"
