"""Fuzzing the parsers of untrusted input: image references, Dockerfiles, layer tars, HTTP.

Property-based tests (hypothesis). For each input minirt reads from someone
else, generated valid inputs must come back as what they say, and arbitrary
or hostile ones may only fail with a ``MinirtError`` that has a one-line
message: any other exception, a traceback, a hang, or a write outside the
destination directory is a bug.

1. ``image.reference.parse``: docker's reference grammar, round trips.
2. ``image.build.parse`` (and ``expand``): the Dockerfile subset.
3. ``image.layer.unpack``: random trees round-trip; hostile members never
   write outside ``dest`` (a sentinel tree next to it is checked, byte for byte).
4. minirtd's HTTP parsing: raw hostile requests on its Unix socket get a
   well-formed answer (docker's ``{"message": ...}`` for errors) or a clean
   close, within a timeout, and the daemon keeps serving.

Deterministic for CI: ``derandomize=True`` and no example database, so every
run tries the same examples. ``MINIRT_FUZZ_SCALE=20`` multiplies the number of
examples, for hunting locally. ``bench/fuzz-unpack`` is the coverage-guided
(atheris) counterpart for the tar unpacker.

Bugs found by fuzzing and not fixed yet are listed in ``KNOWN_BUGS``; each has
a minimal ``test_bug_*`` test below that FAILS until it is fixed (on purpose:
those tests are the bug reports). The property tests skip (``reject``) only
inputs whose failure matches a known bug's exact signature, so they stay green
and keep looking for new ones. Once a bug is fixed, delete its key from
``KNOWN_BUGS`` so the property tests guard the fix too (``MINIRT_FUZZ_KNOWN_BUGS=fail``
shows which property tests find which known bugs).
"""

import gzip
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import stat
import string
import tarfile
import tempfile
import time
from datetime import timedelta
from urllib.parse import quote

import psutil
import pytest
from hypothesis import HealthCheck, assume, event, given, reject, settings, strategies as st

from minirt.errors import ImageError, MinirtError, UsageError
from minirt.image import build, layer, reference

# --- known bugs: found by fuzzing, reported, not fixed in minirt yet -----------------------
# Each key has a failing test_bug_* below. Remove a key once its bug is fixed.
KNOWN_BUGS: dict[str, str] = {}


def known(bug: str) -> bool:
    """Skip this bug's inputs in the property tests? Not with MINIRT_FUZZ_KNOWN_BUGS=fail."""
    return bug in KNOWN_BUGS and os.environ.get("MINIRT_FUZZ_KNOWN_BUGS") != "fail"


# --- settings ----------------------------------------------------------------------------
SCALE = float(os.environ.get("MINIRT_FUZZ_SCALE", "1"))


def fuzz(examples: int, seconds: float = 2.0) -> settings:
    """Bounded and deterministic: the same examples every run, no database."""
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=timedelta(seconds=seconds),
                    derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much,
                                           HealthCheck.function_scoped_fixture])


def assert_clean_error(error: BaseException) -> None:
    """An expected failure: a MinirtError, with a non-empty one-line message."""
    assert isinstance(error, MinirtError), f"{type(error).__name__} escaped: {error!r}"
    message = str(error)
    assert message and "\n" not in message and "\r" not in message, \
        f"not a one-line message: {message!r}"


# =========================================================================================
# 1. image references
# =========================================================================================
# docker's grammar (distribution/reference regexp.go), written out here independently of
# minirt's own regexes: ASCII only.
_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
DOMAIN_RE = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?")
COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")

LOWER = string.ascii_lowercase + string.digits


@st.composite
def path_components(draw):
    runs = draw(st.lists(st.text(LOWER, min_size=1, max_size=5), min_size=1, max_size=4))
    seps = [draw(st.sampled_from([".", "_", "__", "-", "--"])) for _ in runs[1:]]
    return runs[0] + "".join(s + r for s, r in zip(seps, runs[1:]))


labels = st.from_regex(r"\A[A-Za-z0-9](?:[A-Za-z0-9-]{0,6}[A-Za-z0-9])?\Z")
ports = st.integers(1, 65535).map(lambda p: f":{p}")


@st.composite
def registries(draw):
    kind = draw(st.sampled_from(["localhost", "dotted", "port", "docker.io"]))
    if kind == "docker.io":
        return "docker.io"
    if kind == "localhost":
        return "localhost" + draw(st.just("") | ports)
    if kind == "port":  # a single label with a port: the colon makes it a registry
        return draw(labels) + draw(ports)
    return ".".join(draw(st.lists(labels, min_size=2, max_size=4))) + draw(st.just("") | ports)


tags = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}\Z") | \
    st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{127}\Z")
digests = st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h)


@st.composite
def valid_references(draw):
    """(text, registry, repository, tag, digest): a reference and what it must parse to."""
    registry = draw(st.none() | registries())
    path = draw(st.lists(path_components(), min_size=1, max_size=4))
    if registry is None and len(path) > 1 and ("." in path[0] or path[0] == "localhost"):
        path[0] = "x" + path[0].replace(".", "-")  # else docker reads it as a registry too
    tag, digest = draw(st.none() | tags), draw(st.none() | digests)
    text = (f"{registry}/" if registry else "") + "/".join(path) + \
        (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    full_registry = registry or "docker.io"
    if full_registry == "docker.io" and len(path) == 1:
        path = ["library"] + path
    if tag is None and digest is None:
        tag = "latest"
    return text, full_registry, "/".join(path), tag, digest


def fields(ref) -> tuple:
    return ref.registry, ref.repository, ref.tag, ref.digest


@fuzz(400)
@given(valid_references())
def test_valid_references_round_trip(case):
    text, registry, repository, tag, digest = case
    ref = reference.parse(text)
    assert fields(ref) == (registry, repository, tag, digest)
    canonical = f"{registry}/{repository}" + (f":{tag}" if tag else "") + \
        (f"@{digest}" if digest else "")
    assert str(ref) == canonical
    assert fields(reference.parse(str(ref))) == fields(ref), "str() parses back to itself"
    first = repository.split("/")[0]
    # docker.io/a.b/c: the familiar "a.b/c" names registry a.b, in docker too (FamiliarName
    # just drops docker.io): no round trip is possible there.
    looks_like_registry = registry == "docker.io" and "/" in repository and \
        ("." in first or first == "localhost")
    if not looks_like_registry:
        assert fields(reference.parse(ref.familiar)) == fields(ref), "familiar form round-trips"


@st.composite
def invalid_references(draw):
    """A valid reference made invalid in one way docker's grammar forbids."""
    text, registry, repository, tag, digest = draw(valid_references())
    name = text.split("@")[0]
    if ":" in name.rpartition("/")[2]:
        name = name[:name.rindex(":")]
    kind = draw(st.sampled_from(["upper", "empty-component", "slash-end", "slash-start",
                                 "bad-sep-end", "bad-sep-start", "triple-underscore",
                                 "tag-long", "tag-start", "tag-char", "digest-short",
                                 "digest-upper", "digest-algo", "empty-tag", "empty"]))
    suffix = (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    if kind == "upper":  # in the last path component: never a registry in any docker version
        head, _, last = name.rpartition("/")
        letters = [i for i, c in enumerate(last) if c.isalpha()]
        last = (last[:letters[0]] + last[letters[0]].upper() + last[letters[0] + 1:]
                if letters else last + "A")
        return (f"{head}/" if head else "") + last + suffix
    if kind == "empty-component":
        return name + "//x" + suffix
    if kind == "slash-end":
        return name + "/" + suffix
    if kind == "slash-start":
        return "/" + name + suffix
    if kind == "bad-sep-end":
        return name + draw(st.sampled_from(["-", ".", "_", "__"])) + suffix
    if kind == "bad-sep-start":
        return draw(st.sampled_from(["-", ".", "_"])) + name.rpartition("/")[2] + suffix
    if kind == "triple-underscore":
        return name + "___x" + suffix
    if kind == "tag-long":
        return name + ":" + "t" * 129
    if kind == "tag-start":
        return name + ":" + draw(st.sampled_from([".", "-"])) + "tag"
    if kind == "tag-char":
        return name + ":ta" + draw(st.sampled_from(list("+!$%&*,;= \t~^'\""))) + "g"
    if kind == "digest-short":
        return name + "@sha256:" + "a" * 63
    if kind == "digest-upper":
        return name + "@sha256:" + "A" * 64
    if kind == "digest-algo":
        return name + "@" + draw(st.sampled_from(["sha512:", "md5:", "", "sha256"])) + "a" * 64
    if kind == "empty-tag":
        return name + ":"
    return draw(st.sampled_from(["", ":", "@", ":tag", "@sha256:" + "a" * 64, "/"]))


@fuzz(400)
@given(invalid_references())
def test_references_outside_the_grammar_are_refused(text):
    with pytest.raises(UsageError) as caught:
        reference.parse(text)
    assert_clean_error(caught.value)


reference_alphabet = st.sampled_from(list("abcXYZ019:/@._-") + ["sha256:", "a" * 64, "localhost",
                                                                 "é", " ", "\n", "#", "[", "]"])
reference_like = st.lists(reference_alphabet, max_size=12).map("".join)


def grammar_violation(ref) -> str | None:
    """What an accepted reference breaks in docker's grammar (None: nothing)."""
    if not all(COMPONENT_RE.fullmatch(c) for c in ref.repository.split("/")):
        return "repository"
    if ref.tag is not None and not TAG_RE.fullmatch(ref.tag):
        return "ref-unicode-tag" if TAG_RE.fullmatch(ref.tag.encode("ascii", "replace")
                                                     .decode().replace("?", "a")) else "tag"
    if ref.digest is not None and not DIGEST_RE.fullmatch(ref.digest):
        return "digest"
    if ref.registry != "docker.io" and not DOMAIN_RE.fullmatch(ref.registry):
        return "ref-registry"
    return None


@st.composite
def mutated_references(draw):
    """A valid reference with a character put in (or over) somewhere."""
    text = draw(valid_references())[0]
    at = draw(st.integers(0, len(text)))
    char = draw(st.sampled_from(list(" \u00e9#\nA!_-.:/@+") + ["\u0661", "\t", ""]))
    return text[:at] + char + text[at + draw(st.integers(0, 1)):]


@fuzz(500)
@given(st.text(max_size=80) | reference_like | mutated_references())
def test_arbitrary_text_parses_as_the_grammar_says_or_is_a_usage_error(text):
    try:
        ref = reference.parse(text)
    except Exception as e:  # noqa: BLE001 (the point: which type it is)
        assert_clean_error(e)
        assert isinstance(e, UsageError)
        return
    problem = grammar_violation(ref)
    if problem is not None and known(problem):
        reject()
    assert problem is None, f"{text!r} was accepted as {ref}, but its {problem} breaks the grammar"
    assert fields(reference.parse(str(ref))) == fields(ref)


# =========================================================================================
# 2. Dockerfiles
# =========================================================================================
# Characters str.splitlines() breaks at besides \n; docker's parser breaks lines at \n only
# (the control characters among them are left out of generated arguments as all others are).
LINE_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
ARG_CHARS = st.characters(codec="utf-8", exclude_characters="\n\x00",
                          exclude_categories=("Cs", "Cc")) | \
    st.sampled_from(list(" \t\\\"'$[]{}#="))


def clean_text(min_size=1, max_size=30):
    return st.text(ARG_CHARS, min_size=min_size, max_size=max_size).filter(
        lambda s: s == s.strip() and s and not re.search(r"\\[ \t]*$", s))


words = st.text(st.sampled_from(string.ascii_letters + string.digits + "._/-~*?"), min_size=1,
                max_size=12).filter(lambda w: not w.startswith("--"))
env_keys = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,8}\Z")


@st.composite
def instructions(draw, keyword):
    """(arguments, check): valid arguments for ``keyword`` and a check of what they mean."""
    if keyword == "FROM":
        image = draw(path_components()) + draw(st.just("") | tags.map(lambda t: ":" + t))
        if draw(st.booleans()):
            as_ = draw(st.sampled_from(["AS", "as", "As"]))
            return f"{image} {as_} {draw(path_components())}", None
        return image, None
    if keyword in ("RUN", "CMD", "ENTRYPOINT"):
        if draw(st.booleans()):
            argv = draw(st.lists(st.text(ARG_CHARS, max_size=10), min_size=1, max_size=4))
            text = json.dumps(argv, ensure_ascii=draw(st.booleans()))
            return text, lambda ins: build._json_form(ins.arguments) == argv
        text = draw(clean_text().filter(lambda s: build._json_form(s) is None))
        return text, lambda ins: build._json_form(ins.arguments) is None
    if keyword in ("COPY", "ADD"):
        paths = draw(st.lists(words.filter(lambda w: "://" not in w and not w.startswith("git@")),
                              min_size=2, max_size=4))
        if draw(st.booleans()):
            text = json.dumps(paths)
        else:
            text = " ".join(paths)
        return text, lambda ins: build._copy_arguments(ins) == (paths[:-1], paths[-1])
    if keyword in ("ENV", "LABEL"):
        if draw(st.booleans()):  # the old form: KEY the rest
            key, value = draw(env_keys), draw(clean_text())
            sep = draw(st.sampled_from([" ", "\t", "  "]))
            return f"{key}{sep}{value}", \
                lambda ins: build._pairs(ins.arguments, keyword, ins.line) == [(key, value)]
        pairs = draw(st.lists(st.tuples(env_keys, st.text(ARG_CHARS, max_size=12)), min_size=1,
                              max_size=3))
        text = " ".join(f"{k}={shlex.quote(v)}" for k, v in pairs)
        return text, lambda ins: build._pairs(ins.arguments, keyword, ins.line) == pairs
    return draw(clean_text()), None  # WORKDIR, USER


KEYWORDS = [k for k in build.SUPPORTED if k != "FROM"]


def random_case(draw, keyword: str) -> str:
    return "".join(c.lower() if draw(st.booleans()) else c for c in keyword)


def filler_lines(draw) -> list[str]:
    return draw(st.lists(st.sampled_from(["", "   ", "\t", "# a comment", "  # indented comment",
                                          "#"]), max_size=2))


@st.composite
def dockerfiles(draw):
    """(text, expected [(keyword, arguments, line, text)], checks)."""
    chosen = ["FROM"] + draw(st.lists(st.sampled_from(KEYWORDS), max_size=6))
    lines, expected, checks = [], [], []
    lines += filler_lines(draw)
    for keyword in chosen:
        arguments, check = draw(instructions(keyword))
        indent = draw(st.sampled_from(["", " ", "\t", "  "]))
        sep = draw(st.sampled_from([" ", "\t", "  ", " \t "]))
        whole = random_case(draw, keyword) + sep + arguments
        # continuation lines: cut anywhere after the keyword's first letter, but no piece may
        # look like a comment or be blank (docker drops those lines inside a continuation)
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(whole) - 1)), max_size=3))))
        pieces = [whole[a:b] for a, b in zip([0] + cuts, cuts + [len(whole)])]
        assume(all(p.strip() and not p.strip().startswith("#") for p in pieces[1:]))
        start = len(lines) + 1
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            lines.append((indent if i == 0 else "") + piece +
                         ("" if last else "\\" + draw(st.sampled_from(["", " ", "\t"]))))
            if not last:
                lines += filler_lines(draw)
        expected.append((keyword, arguments, start, f"{keyword} {arguments}"))
        checks.append(check)
        lines += filler_lines(draw)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines) + draw(st.sampled_from(["", newline])), expected, checks


@fuzz(300)
@given(dockerfiles())
def test_generated_dockerfiles_parse_into_their_instructions(case):
    text, expected, checks = case
    parsed = build.parse(text)
    assert [(i.keyword, i.arguments, i.line, i.text) for i in parsed] == expected
    for instruction, check in zip(parsed, checks):
        if check is not None:
            assert check(instruction), instruction


dockerfile_keywords = st.sampled_from(list(build.SUPPORTED) + list(build.KNOWN_UNSUPPORTED) +
                                      ["from", "run", "copy", "ONBUILD", "BOGUS", "#", "\\", ""])
dockerfile_tokens = st.sampled_from(["--from=x", "--chown=1", "[", "]", "[\"a\", \"b\"]", "\"",
                                     "AS", "as", "x", "http://x/y", "git@x:y", "$A", "${A:-b}",
                                     "a=b", "=", "\\", "\t", " ", "#", "scratch", "busybox",
                                     "\u2028", "\x0c", "é"])


@st.composite
def dockerfile_like(draw):
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        line = draw(dockerfile_keywords) + " " + "".join(draw(st.lists(dockerfile_tokens,
                                                                       max_size=6)))
        lines.append(line + draw(st.sampled_from(["", "\\", " \\ ", "\\\t"])))
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines)


@fuzz(500)
@given(st.text(max_size=200) | dockerfile_like())
def test_arbitrary_dockerfile_text_parses_or_is_a_usage_error(text):
    try:
        parsed = build.parse(text)
    except Exception as e:  # noqa: BLE001
        assert_clean_error(e)
        return
    assert parsed and parsed[0].keyword == "FROM"
    assert all(i.keyword in build.SUPPORTED for i in parsed)
    assert [i.keyword for i in parsed].count("FROM") == 1
    assert all(i.arguments and i.arguments == i.arguments.strip() for i in parsed)
    lines = [i.line for i in parsed]
    assert lines == sorted(set(lines)) and lines[0] >= 1


@st.composite
def expansions(draw):
    """(text, env, expected): docker's $V, ${V}, ${V:-d}, ${V:+a} and \\$."""
    env = draw(st.dictionaries(env_keys, st.text(ARG_CHARS, max_size=6), max_size=4))
    names = list(env) + ["UNSET_" + draw(env_keys)]
    text, expected = "", ""
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["plain", "bare", "braced", "default", "alternative",
                                     "escaped"]))
        name = draw(st.sampled_from(names))
        value = env.get(name, "")
        if kind == "plain":
            piece = draw(st.text(ARG_CHARS.filter(lambda c: c not in "$\\"), max_size=8))
            text, expected = text + piece, expected + piece
            text, expected = text + " ", expected + " "  # a following word char would join $V
        elif kind == "bare":
            text, expected = text + f"${name} ", expected + value + " "
        elif kind == "braced":
            text, expected = text + f"${{{name}}}", expected + value
        elif kind == "default":
            word = draw(st.text(ARG_CHARS.filter(lambda c: c not in "}$\\"), max_size=6))
            text, expected = text + f"${{{name}:-{word}}}", expected + (value or word)
        elif kind == "alternative":
            word = draw(st.text(ARG_CHARS.filter(lambda c: c not in "}$\\"), max_size=6))
            text, expected = text + f"${{{name}:+{word}}}", expected + (word if value else "")
        else:
            text, expected = text + f"\\${name}", expected + f"${name}"
    return text, env, expected


@fuzz(300)
@given(expansions())
def test_expand_substitutes_as_docker_does(case):
    text, env, expected = case
    assert build.expand(text, env) == expected


@fuzz(300)
@given(st.text(max_size=60), st.dictionaries(st.text(max_size=5), st.text(max_size=5)))
def test_expand_never_fails_and_leaves_dollarless_text_alone(text, env):
    result = build.expand(text, env)
    assert isinstance(result, str)
    if "$" not in text:
        assert result == text


# =========================================================================================
# 3. layer tars
# =========================================================================================
AS_ROOT = os.geteuid() == 0
MAX_BYTES = 64 * 1024   # the cap in the hostile tests: bombs stay cheap


class Sandbox:
    """``base/root/layer`` to unpack into, with sentinels next to it (in ``base/root``, and
    in ``base``: ``..`` twice) whose every byte and inode is compared afterwards."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="minirt-fuzz-", dir="/var/tmp")
        self.sentinel = os.path.join(self.base, "sentinel")
        for directory in (self.sentinel, os.path.join(self.base, "root"),
                          os.path.join(self.base, "root", "sentinel")):
            os.makedirs(directory)
            with open(os.path.join(directory, "secret"), "w") as f:
                f.write("untouched\n")
            os.makedirs(os.path.join(directory, "dir"))
            os.symlink("secret", os.path.join(directory, "link"))
        self.dest = os.path.join(self.base, "root", "layer")
        os.mkdir(self.dest)
        self.before = self.outside()

    def outside(self) -> dict:
        found = {}
        for directory, dirs, files in os.walk(self.base):
            if directory == os.path.join(self.base, "root"):
                dirs[:] = [d for d in dirs if d != "layer"]
            for name in dirs + files:
                path = os.path.join(directory, name)
                st_ = os.lstat(path)
                content = None
                if stat.S_ISREG(st_.st_mode):
                    with open(path, "rb") as f:
                        content = hashlib.sha256(f.read()).hexdigest()
                elif stat.S_ISLNK(st_.st_mode):
                    content = os.readlink(path)
                found[os.path.relpath(path, self.base)] = (
                    st_.st_mode, st_.st_ino, st_.st_nlink, st_.st_size, st_.st_mtime_ns,
                    st_.st_uid, st_.st_gid, content)
        return found

    def check_outside(self) -> None:
        assert os.path.isdir(self.dest) and not os.path.islink(self.dest), "dest was replaced"
        after = self.outside()
        changed = sorted(k for k in set(self.before) | set(after)
                         if self.before.get(k) != after.get(k))
        assert not changed, f"unpack wrote outside its destination: {changed}"

    def close(self) -> None:
        def unlock(function, path, _):
            os.chmod(os.path.dirname(path), 0o700)
            function(path)
        shutil.rmtree(self.base, onerror=unlock)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def written_bytes(dest: str) -> int:
    seen, total = set(), 0
    for directory, dirs, files in os.walk(dest):
        for name in files:
            st_ = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(st_.st_mode) and st_.st_ino not in seen:
                seen.add(st_.st_ino)
                total += st_.st_size
    return total


def unpack_checked(data: bytes, max_bytes: int = MAX_BYTES, reader=io.BytesIO):
    """Unpack ``data`` into a fresh sandbox and check every safety property.

    Returns (sandbox, None) after a success, (None, error) after a clean refusal.
    The sandbox must be closed by the caller.
    """
    box = Sandbox()
    fds = open_fds()
    try:
        try:
            layer.unpack(reader(data), box.dest, max_bytes)
            error = None
        except Exception as e:  # noqa: BLE001
            assert_clean_error(e)
            assert isinstance(e, ImageError), f"{type(e).__name__}, not ImageError: {e}"
            error = e
        box.check_outside()
        assert open_fds() == fds, "unpack leaked file descriptors"
        total = written_bytes(box.dest)
        if total > max_bytes:
            raise AssertionError(f"unpack wrote {total} bytes, more than max_bytes={max_bytes}")
    except BaseException:
        box.close()
        raise
    if error is not None:
        box.close()
        return None, error
    return box, None


class Trickle:
    """A reader that hands out at most a few bytes per read (short reads everywhere)."""

    def __init__(self, data: bytes, step: int):
        self.data, self.step, self.at = data, step, 0

    def read(self, n=-1):
        n = self.step if n is None or n < 0 else min(n, self.step)
        chunk = self.data[self.at:self.at + n]
        self.at += len(chunk)
        return chunk


# --- random trees ------------------------------------------------------------------------
NAME_ALPHABET = st.characters(codec="utf-8", exclude_characters="/\x00",
                              exclude_categories=("Cs",)) | st.sampled_from(list("ab.-_ \n"))
names = st.text(NAME_ALPHABET, min_size=1, max_size=12).filter(
    lambda n: n not in (".", "..") and not n.startswith((".wh.", "gone-", "hl-")))
modes = st.integers(0, 0o7777)
owners = st.tuples(st.integers(0, 65535), st.integers(0, 65535))
mtimes = st.integers(0, 2 ** 33 - 1)


def file_nodes():
    return st.builds(lambda data, mode, owner, mtime: {"kind": "file", "data": data, "mode": mode,
                                                       "owner": owner, "mtime": mtime},
                     st.binary(max_size=600), modes, owners, mtimes)


def symlink_nodes():
    target = st.text(NAME_ALPHABET | st.just("/"), min_size=1, max_size=40) | \
        st.sampled_from(["/", "..", "../..", "/etc/passwd", "../../sentinel/secret", "."])
    return st.builds(lambda target, owner, mtime: {"kind": "symlink", "target": target,
                                                   "owner": owner, "mtime": mtime},
                     target, owners, mtimes)


def dir_nodes(children):
    dir_modes = modes if AS_ROOT else modes.map(lambda m: m | 0o700)
    return st.builds(lambda entries, mode, owner, explicit: {
        "kind": "dir", "entries": entries, "mode": mode, "owner": owner, "explicit": explicit},
        st.dictionaries(names, children, max_size=4), dir_modes, owners,
        st.booleans() | st.just(True))


def flatten(node: dict, prefix: str = "") -> list[tuple[str, dict]]:
    found = []
    for name, child in node["entries"].items():
        path = prefix + name
        found.append((path, child))
        if child["kind"] == "dir":
            found += flatten(child, path + "/")
    return found


@st.composite
def layer_trees(draw):
    """(members in tar order, expected {path: ...}, opaque dirs)."""
    root = draw(dir_nodes(st.recursive(file_nodes() | symlink_nodes(), dir_nodes,
                                       max_leaves=16)))
    entries = flatten(root)
    members = [(path, node) for path, node in entries
               if node["kind"] != "dir" or node["explicit"]]
    members = draw(st.permutations(members))  # children may come before their directory
    dirs = [""] + [p for p, n in entries if n["kind"] == "dir"]
    files = [p for p, n in entries if n["kind"] == "file"]
    expected = dict(entries)
    links = []
    for i in range(draw(st.integers(0, 3)) if files else 0):
        target = draw(st.sampled_from(files))
        path = draw(st.sampled_from(dirs)).rstrip("/")
        path = (path + "/" if path else "") + f"hl-{i}"
        links.append((path, {"kind": "hardlink", "target": target}))
        expected[path] = links[-1][1]
    whiteouts, opaque = [], set()
    if AS_ROOT:  # mknod and trusted.* xattrs need root
        for i in range(draw(st.integers(0, 2))):
            where = draw(st.sampled_from(dirs))
            whiteouts.append(((where + "/" if where else "") + f".wh.gone-{i}",
                              {"kind": "whiteout"}))
            expected[(where + "/" if where else "") + f"gone-{i}"] = {"kind": "whiteout"}
        for where in draw(st.lists(st.sampled_from(dirs[1:]), max_size=2, unique=True)
                          if len(dirs) > 1 else st.just([])):
            whiteouts.append((where + "/.wh..wh..opq", {"kind": "opaque"}))
            opaque.add(where)
    members = draw(st.permutations(members + whiteouts)) + links  # links after their targets
    if draw(st.booleans()):
        members = [(".", {"kind": "dir", "mode": 0o755, "owner": (0, 0), "explicit": True,
                          "root": True})] + members
    # a directory no member names (nor names anything below) is not in the tar at all
    paths = [path for path, _ in members]
    expected = {path: node for path, node in expected.items()
                if node["kind"] != "dir" or node["explicit"] or
                any(p.startswith(path + "/") for p in paths)}
    return members, expected, opaque


def tar_member(path: str, node: dict, dot_prefix: bool) -> tuple[tarfile.TarInfo, bytes | None]:
    name = ("./" if dot_prefix else "") + path
    info = tarfile.TarInfo(name)
    kind = node["kind"]
    info.mode = node.get("mode", 0o644)
    info.uid, info.gid = node.get("owner", (0, 0))
    info.mtime = node.get("mtime", 0)
    data = None
    if kind == "dir":
        info.type = tarfile.DIRTYPE
        info.name = name + draw_slash(path)
    elif kind == "file":
        info.type, info.size, data = tarfile.REGTYPE, len(node["data"]), node["data"]
    elif kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, node["target"]
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, node["target"]
    else:  # whiteout and opaque markers: empty regular files
        info.type = tarfile.REGTYPE
    return info, data


def draw_slash(path: str) -> str:
    return "/" if len(path) % 2 else ""  # directories both with and without a trailing slash


def make_tar(members, tar_format=tarfile.PAX_FORMAT, dot_prefix=False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as tar:
        for path, node in members:
            info, data = tar_member(path, node, dot_prefix)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def actual_tree(dest: str) -> dict:
    found = {}
    for directory, dirs, files in os.walk(dest):
        for name in dirs + files:
            path = os.path.join(directory, name)
            found[os.path.relpath(path, dest)] = os.lstat(path)
    return found


@fuzz(150, seconds=5)
@given(layer_trees(), st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]), st.booleans(),
       st.booleans(), st.sampled_from([None, 1, 7, 512]))
def test_random_trees_unpack_to_themselves(tree, tar_format, compress, dot_prefix, trickle):
    members, expected, opaque = tree
    data = make_tar(members, tar_format, dot_prefix)
    if compress:
        data = gzip.compress(data, mtime=0)
    reader = io.BytesIO if trickle is None else (lambda d: Trickle(d, trickle))
    box, error = unpack_checked(data, max_bytes=layer.MAX_LAYER_BYTES, reader=reader)
    assert error is None, f"a well-formed layer was refused: {error}"
    try:
        actual = actual_tree(box.dest)
        assert set(actual) == set(expected)
        mask = 0o7777 if AS_ROOT else 0o1777
        for path, node in expected.items():
            st_ = actual[path]
            kind = node["kind"]
            if kind == "dir":
                assert stat.S_ISDIR(st_.st_mode), path
                if node["explicit"]:
                    assert stat.S_IMODE(st_.st_mode) == node["mode"] & mask, path
            elif kind == "file":
                assert stat.S_ISREG(st_.st_mode), path
                with open(os.path.join(box.dest, path), "rb") as f:
                    assert f.read() == node["data"], path
                assert stat.S_IMODE(st_.st_mode) == node["mode"] & mask, path
                assert int(st_.st_mtime) == node["mtime"], path
            elif kind == "symlink":
                assert stat.S_ISLNK(st_.st_mode), path
                assert os.readlink(os.path.join(box.dest, path)) == node["target"], path
                assert int(st_.st_mtime) == node["mtime"], path
            elif kind == "hardlink":
                assert st_.st_ino == actual[node["target"]].st_ino, path
            elif kind == "whiteout":
                assert stat.S_ISCHR(st_.st_mode) and st_.st_rdev == 0, path
            if AS_ROOT and kind in ("dir", "file", "symlink") and \
                    (kind != "dir" or node["explicit"]):
                assert (st_.st_uid, st_.st_gid) == node["owner"], path
        for where in opaque:
            assert os.getxattr(os.path.join(box.dest, where), "trusted.overlay.opaque",
                               follow_symlinks=False) == b"y", where
    finally:
        box.close()


# --- hostile members ---------------------------------------------------------------------
HOSTILE_COMPONENTS = ["a", "b", "d", "s", "..", ".", "", ".wh.a", ".wh..wh..opq", ".wh.", ".wh..",
                      "x\ny", "n" * 255, "n" * 256, "é", " ", "sentinel", "secret", "link"]
HOSTILE_NAMES = ["/", "/abs", "//abs/x", "./", "../sentinel/secret", "../../sentinel/secret",
                 "../sentinel/new", "s/secret", "s/new", "s/dir/new", "@SENT@/new",
                 "@SENT@/secret", "a/../../sentinel/new", ".wh.s", "s/.wh.secret",
                 "s/.wh..wh..opq", "d/" * 120 + "deep"]
HOSTILE_TARGETS = ["/", "..", "../..", "../sentinel", "../../sentinel", "@SENT@", "@SENT@/secret",
                   "@BASE@", "s", "s/secret", "a", "d", "", ".", "a/b", "/etc/passwd",
                   "../sentinel/secret", "h", "x\ny"]

hostile_names = st.sampled_from(["f", "a/f", "d/g", "d/", "s"]) | st.sampled_from(HOSTILE_NAMES) | \
    st.lists(st.sampled_from(HOSTILE_COMPONENTS), min_size=1, max_size=5).map("/".join)
hostile_targets = st.sampled_from(HOSTILE_TARGETS) | hostile_names
KINDS = ["reg", "reg", "dir", "sym", "sym", "lnk", "lnk", "chr", "blk", "fifo", "cont",
         "unknown", "bomb"]
PAX_VALUES = {
    "mtime": ["0", "1.5", "-1", "1700000000.123456789", "1e400", "-1e400", "nan", "inf", "x",
              "99999999999999999999"],
    "uid": ["0", "65534", "-1", str(2 ** 31), str(2 ** 40), str(2 ** 70), "x"],
    "gid": ["0", "65534", "-1", str(2 ** 40), "x"],
    "size": ["0", "-1", "5", "99999999999", "x"],
    "path": ["f", "../sentinel/new", "@SENT@/new", "s/new", "a\x00b", "", "/", "."],
    "linkpath": ["f", "../sentinel", "@SENT@", "a\x00b", ""],
    "uname": ["root", "", "\x00"], "atime": ["1", "nan"],
}
PAX_EXTRAS = st.lists(st.sampled_from(sorted(PAX_VALUES)).flatmap(
    lambda key: st.tuples(st.just(key), st.sampled_from(PAX_VALUES[key]))),
    min_size=1, max_size=2).map(dict)


@st.composite
def hostile_members(draw):
    kind = draw(st.sampled_from(KINDS))
    member = {"kind": kind, "name": draw(hostile_names), "mode": draw(modes),
              "target": draw(hostile_targets), "data": draw(st.binary(max_size=64)),
              "owner": draw(owners), "pax": draw(st.none() | PAX_EXTRAS),
              "dev": (draw(st.integers(0, 255)), draw(st.integers(0, 255)))}
    return member


OUTSIDE = ["@SENT@", "@SENT@/dir", "@SENT@/secret", "../sentinel", "../../sentinel",
           "../sentinel/dir", "..", "../..", "/", "@BASE@", "@SENT@/link"]


@st.composite
def attack_chains(draw):
    """The classic escapes, as a sequence: plant a symlink (or a hard link, or a whiteout)
    that points outside, then write through it with a later member."""
    link = draw(st.sampled_from(["s", "d/s", "a/b/s"]))
    planted = {"kind": draw(st.sampled_from(["sym", "sym", "sym", "lnk"])), "name": link,
               "target": draw(st.sampled_from(OUTSIDE)), "mode": 0o777, "data": b"",
               "owner": (0, 0), "pax": None, "dev": (0, 0)}
    chain = [planted]
    for _ in range(draw(st.integers(1, 3))):
        leaf = draw(st.sampled_from(["secret", "new", "dir/new", ".wh.secret", ".wh..wh..opq",
                                     "link", "dir", "", "../x"]))
        chain.append({"kind": draw(st.sampled_from(["reg", "reg", "dir", "sym", "lnk", "fifo",
                                                    "bomb"])),
                      "name": draw(st.sampled_from([link + "/" + leaf, link, "h"])),
                      "target": draw(st.sampled_from([link, link + "/secret", link + "/dir",
                                                      "s", "h"] + OUTSIDE)),
                      "mode": draw(modes), "data": b"pwned", "owner": (0, 0), "pax": None,
                      "dev": (0, 0)})
    return chain


def hostile_tar(members, base: str, sentinel: str, tar_format) -> bytes:
    def place(text: str) -> str:
        return text.replace("@SENT@", sentinel).replace("@BASE@", base)
    types = {"reg": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
             "lnk": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
             "fifo": tarfile.FIFOTYPE, "cont": tarfile.CONTTYPE, "unknown": b"Z",
             "bomb": tarfile.REGTYPE}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as tar:
        for m in members:
            info = tarfile.TarInfo(place(m["name"]))
            info.type, info.mode = types[m["kind"]], m["mode"]
            info.uid, info.gid = m["owner"]
            info.devmajor, info.devminor = m["dev"]
            data = m["data"] if m["kind"] in ("reg", "cont", "unknown") else b""
            if m["kind"] == "bomb":
                data = b"\0" * (MAX_BYTES + 1 + len(m["data"]))
            info.size = len(data)
            if m["kind"] in ("sym", "lnk"):
                info.linkname = place(m["target"])
            if m["pax"] and tar_format == tarfile.PAX_FORMAT:
                info.pax_headers = {k: place(v) for k, v in m["pax"].items()}
            try:
                tar.addfile(info, io.BytesIO(data))
            except (ValueError, tarfile.TarError, OverflowError):
                continue  # tarfile cannot even write this one: leave it out
    return buffer.getvalue()


@fuzz(300, seconds=5)
@given(st.lists(hostile_members().map(lambda m: [m]) | attack_chains(), min_size=1,
               max_size=5).map(lambda groups: [m for group in groups for m in group]),
       st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
       st.sampled_from(["plain", "gzip"]),
       st.none() | st.floats(0, 1),   # truncate at this fraction of the archive
       st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=2))  # byte flips
def test_hostile_layers_never_write_outside_and_fail_cleanly(members, tar_format, compression,
                                                            truncate, flips):
    # The sandbox's paths go into the archive (symlink targets, absolute names), so the
    # archive is made for one sandbox: make it, then unpack into a fresh one at the same
    # paths' depth (the absolute ones point at the first sandbox's sentinel, still checked).
    scratch = Sandbox()
    try:
        data = hostile_tar(members, scratch.base, scratch.sentinel, tar_format)
        if compression == "gzip":
            data = gzip.compress(data, mtime=0)
        if truncate is not None:
            data = data[:int(len(data) * truncate)]
        data = bytearray(data)
        for where, value in flips:
            if data:
                data[min(len(data) - 1, int(len(data) * where))] = value
        box, _ = unpack_checked(bytes(data))
        if box is not None:
            box.close()
        scratch.check_outside()  # the absolute paths in the archive point here
    finally:
        scratch.close()


def valid_layer_seed() -> bytes:
    members = [("etc", {"kind": "dir", "mode": 0o755, "owner": (0, 0), "mtime": 1}),
               ("etc/hostname", {"kind": "file", "data": b"box\n", "mode": 0o644,
                                 "owner": (0, 0), "mtime": 1}),
               ("bin/sh", {"kind": "symlink", "target": "/bin/busybox", "owner": (0, 0),
                           "mtime": 1}),
               ("etc/hn", {"kind": "hardlink", "target": "etc/hostname"})]
    return make_tar(members)


@st.composite
def garbage_streams(draw):
    seed = valid_layer_seed()
    kind = draw(st.sampled_from(["bytes", "gzip-magic", "seed-mutated", "gzip-mutated",
                                 "header-random", "seed-tail"]))
    if kind == "bytes":
        return draw(st.binary(max_size=2048))
    if kind == "gzip-magic":
        return b"\x1f\x8b" + draw(st.binary(max_size=512))
    if kind == "seed-tail":
        return seed[:draw(st.integers(0, len(seed)))] + draw(st.binary(max_size=512))
    data = bytearray(gzip.compress(seed, mtime=0) if kind == "gzip-mutated" else seed)
    if kind == "header-random":  # a random header with a valid checksum: past tarfile's check
        header = bytearray(draw(st.binary(min_size=512, max_size=512)))
        header[257:263] = draw(st.sampled_from([b"ustar\x00", b"ustar ", b"\x00" * 6]))
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\x00 " % sum(header)
        return bytes(header) + draw(st.binary(max_size=1024)) + b"\x00" * 1024
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    return bytes(data)


@fuzz(400, seconds=5)
@given(garbage_streams())
def test_garbage_streams_fail_cleanly(data):
    box, _ = unpack_checked(data)
    if box is not None:
        box.close()


# =========================================================================================
# 4. minirtd's HTTP parsing, over its real Unix socket
# =========================================================================================
@pytest.fixture(scope="module")
def fuzz_daemon():
    """minirtd on its own empty state root (no images: nothing a request can run or pull
    locally), started and stopped as tests/daemon_fixtures.py does; no process may outlive it."""
    from daemon_fixtures import serving, socket_dir
    root = tempfile.mkdtemp(prefix="minirt-fuzz-state-", dir="/var/tmp")
    os.chmod(root, 0o755)
    sockets = socket_dir("minirtd-fuzz-")
    directory = next(sockets)
    served = serving(root, directory)
    children = []
    try:
        running = next(served)
        status, _, images = running.request("GET", "/images/json")
        assert status == 200 and images == [], "the fuzzed daemon must start with no images"
        daemon_process = psutil.Process(running.process.pid)
        children = daemon_process.children(recursive=True)
        yield running
        if running.process.poll() is None:
            children += daemon_process.children(recursive=True)
    finally:
        next(served, None)   # SIGTERM; asserts exit 0, socket gone, process gone
        next(sockets, None)
        shutil.rmtree(root, ignore_errors=True)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"minirtd left processes behind: {alive}"


EXCHANGE_TIMEOUT = 10.0


def exchange(socket_path: str, raw: bytes, timeout: float = EXCHANGE_TIMEOUT) -> bytes:
    """Send ``raw``, end our side, and read until the daemon closes (or fail: a hang)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    received = bytearray()
    try:
        sock.connect(socket_path)
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed before taking everything (e.g. 431, 413)
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"minirtd did not answer or close within {timeout} s")
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                raise AssertionError(f"minirtd did not answer or close within {timeout} s: "
                                     f"got {bytes(received[:300])!r}") from None
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    finally:
        sock.close()
    return bytes(received)


INTERNAL = "minirtd internal error"


def read_chunked(rest: bytes) -> tuple[bytes, bytes]:
    body = b""
    while True:
        line, sep, rest = rest.partition(b"\r\n")
        assert sep, "a chunked answer cut short"
        size = int(line.split(b";")[0], 16)
        if size == 0:
            while True:  # trailers, then the empty line
                line, sep, rest = rest.partition(b"\r\n")
                assert sep, "a chunked answer without its final empty line"
                if not line:
                    return body, rest
        body += rest[:size]
        assert rest[size:size + 2] == b"\r\n", "a chunk without its CRLF"
        rest = rest[size + 2:]


def parse_answers(data: bytes, methods: list[str]) -> tuple[list, bytes]:
    """Every HTTP response in ``data``, each checked to be well formed; ``methods`` are the
    requests' methods in order (a HEAD answer has no body). Returns the answers and what
    followed them that is not HTTP (an HTTP/0.9-style bare body), if anything."""
    answers = []
    methods = list(methods)
    while data:
        if not data.startswith(b"HTTP/"):
            return answers, data
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"an answer without the end of its header: {data[:300]!r}"
        lines = head.split(b"\r\n")
        match = re.fullmatch(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*", lines[0])
        assert match, f"a malformed status line: {lines[0]!r}"
        status = int(match[1])
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            assert colon and name.strip() == name and name, f"a malformed header {line!r}"
            headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
        if 100 <= status < 200 and status != 101:
            data = rest  # 100 Continue: the real answer follows
            continue
        method = methods.pop(0) if methods else "?"
        if status == 101 or (status == 200 and "raw-stream" in headers.get("content-type", "")):
            answers.append((status, headers, rest))  # hijacked: no more HTTP
            break
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body, rest = read_chunked(rest)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if method == "?" and len(rest) < length and rest.startswith(b"HTTP/1."):
                length = 0  # the request it answers was a HEAD we did not know about
            body, rest = rest[:length], rest[length:]
            assert len(body) == length, "the answer's body is shorter than its Content-Length"
        else:
            body, rest = rest, b""   # until the close
        answers.append((status, headers, body))
        data = rest
    return answers, b""


def check_exchange(raw: bytes, data: bytes, methods: list[str] | None = None) -> list:
    """The daemon's answer to ``raw``: well-formed responses, errors in docker's shape."""
    if methods is None:
        methods = [line.split(b" ", 1)[0].decode("latin-1")
                   for line in raw.split(b"\n")[:1]]
    answers, bare = parse_answers(data, methods)
    if bare:
        # An HTTP/0.9 request ("GET /path", no version) may get a bare body, as that protocol
        # has no status line (minirtd answers it with a 400 in HTTP/1.1, as dockerd does); an
        # error for a request line it refuses (a bad version, garbage) may not.
        try:
            value = json.loads(bare)
        except ValueError:
            value = None
        if isinstance(value, dict) and "message" in value:
            raise AssertionError(f"an error answer without a status line: {bare[:300]!r}")
        assert re.search(rb"(?m)^GET [^ \r\n]+\r?$", raw), \
            f"an answer without a status line: {bare[:300]!r}"
    for status, headers, body in answers:
        if status >= 400 and body:
            assert headers.get("content-type", "").startswith("application/json"), headers
            value = json.loads(body)
            assert isinstance(value, dict) and isinstance(value.get("message"), str) and \
                value["message"], f"not docker's error shape: {body[:300]!r}"
            if value["message"].startswith(INTERNAL):
                raise AssertionError(f"an unexpected exception in minirtd (a 500 with a "
                                     f"traceback in its log): {value['message']}")
    return answers


def log_problems(log: str) -> list[str]:
    """The exceptions of the tracebacks in the daemon's log (there should be none)."""
    problems = []
    for block in log.split("Traceback (most recent call last):")[1:]:
        lines = [line for line in block.splitlines() if line and not line.startswith((" ", "-"))]
        problems.append(lines[0] if lines else block[-200:])
    return problems


def assert_still_serving(daemon) -> None:
    assert daemon.process.poll() is None, f"minirtd died:\n{daemon.log[-3000:]}"
    status, _, body = daemon.request("GET", "/_ping")
    assert status == 200 and body == b"OK"
    problems = log_problems(daemon.log)
    assert not problems, f"tracebacks in minirtd's log: {problems}"


# Routes that cannot reach the network, start anything or touch the host (no pulls, pushes,
# logins, builds, network creation): with no images and no containers they answer from
# parsing alone, which is what is under test.
ROUTES = [("GET", "/_ping"), ("HEAD", "/_ping"), ("GET", "/version"), ("GET", "/info"),
          ("GET", "/images/json"), ("GET", "/containers/json"), ("POST", "/commit"),
          ("POST", "/containers/create"), ("GET", "/containers/@/json"),
          ("POST", "/containers/@/start"), ("POST", "/containers/@/stop"),
          ("POST", "/containers/@/wait"), ("POST", "/containers/@/attach"),
          ("GET", "/containers/@/logs"), ("DELETE", "/containers/@"),
          ("GET", "/images/@/json"), ("GET", "/images/@/history"), ("POST", "/images/@/tag"),
          ("DELETE", "/images/@"), ("GET", "/networks"), ("GET", "/networks/@"),
          ("DELETE", "/networks/@"), ("GET", "/exec/@/json"), ("POST", "/exec/@/start"),
          ("POST", "/containers/@/exec"), ("PUT", "/containers/@/archive"),
          ("HEAD", "/containers/@/archive"), ("GET", "/minirt/requests"), ("GET", "/system/df"),
          ("POST", "/containers/prune"), ("GET", "/volumes"), ("POST", "/images/load"),
          ("GET", "/fuzz/nothing"), ("OPTIONS", "/_ping"), ("PATCH", "/containers/@")]
PARAMS = ["fuzz-none", "%00", "..", "%2e%2e", "a%2Fb", "%ff", "é", "x" * 300, "sha256:" + "0" * 64,
          "%", "%zz", "busybox:latest", "/x"]
QUERY_KEYS = ["all", "filters", "limit", "since", "until", "force", "repo", "tag", "name",
              "container", "changes", "size", "digests", "filter", "comment", "stream", "t"]
QUERY_VALUES = st.sampled_from(["", "1", "true", "0", "-1", "abc", "1e5", "99999999999999999999",
                                "٣", '{"label":["a"]}', '{"name":["("]}', "{", "[]", '{"a":1}',
                                '{"dangling":["true"]}', "%", "%zz", "%00", "a b", "1.5",
                                "busybox", "UPPER:tag", "x" * 2000,
                                "[" * 3000 + "]" * 3000]) | st.text(max_size=20)


@st.composite
def targets(draw, path: str):
    path = path.replace("@", draw(st.sampled_from(PARAMS) | st.text(max_size=10).map(quote)))
    version = draw(st.sampled_from(["", "", "/v1.43", "/v1.24", "/v1.12", "/v9.99", "/v1.43/",
                                    "/vX.1", "/v" + "1" * 30 + ".1", "/v" + "1" * 5000 + ".1",
                                    "http://localhost", "http://[", "http://[::1]"]))
    path = version + path + draw(st.sampled_from(["", "", "/", "//", "?", "#frag"]))
    pairs = draw(st.lists(st.tuples(st.sampled_from(QUERY_KEYS) | st.text(max_size=5),
                                    QUERY_VALUES), max_size=4))
    if pairs:
        encode = draw(st.booleans())
        query = "&".join(f"{quote(k) if encode else k}={quote(v) if encode else v}"
                         for k, v in pairs)
        path += ("&" if "?" in path else "?") + query
    return path


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) |
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12)


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def bodies(draw):
    """(bytes, chunked?): a request body, maybe in (broken) chunked encoding."""
    kind = draw(st.sampled_from(["none", "json", "json", "bad-json", "binary", "nested"]))
    if kind == "none":
        body = b""
    elif kind == "json":
        body = json.dumps(draw(json_values)).encode()
    elif kind == "bad-json":
        body = draw(st.sampled_from([b"{", b"[1,", b'{"a":}', b"nul", b"\xff\xfe", b"1e999999",
                                     b'"\\ud800"', b"NaN", b"{}{}", b" ", b"\x00"]))
    elif kind == "nested":
        body = nested_json(draw(st.sampled_from([1, 2, 10, 100, 5000]))).encode()
    else:
        body = draw(st.binary(max_size=256))
    if not draw(st.booleans()):
        return body, False
    chunks, rest = [], body
    while rest:
        size = draw(st.integers(1, len(rest)))
        chunks.append(rest[:size])
        rest = rest[size:]
    sizes = st.sampled_from(["zz", "", "1;ext=1", " 3 ", "0x5", "+3", "ffffffffffffffff",
                             "1" * 100, "-1", "-5", "5\x00"])
    out = b""
    for chunk in chunks:
        size = draw(sizes) if draw(st.integers(0, 3)) == 0 else None
        out += (size if size is not None else f"{len(chunk):x}").encode() + b"\r\n" + chunk + \
            draw(st.sampled_from([b"\r\n", b"\r\n", b"", b"\n"]))
    out += draw(st.sampled_from([b"0\r\n\r\n", b"0\r\n\r\n", b"0\r\nX-Trailer: 1\r\n\r\n", b"",
                                 b"0\r\n"]))
    return out, True


HEADER_CHOICES = st.sampled_from([
    ("Host", "localhost"), ("Content-Type", "application/json"), ("Content-Type", "text/plain"),
    ("Connection", "close"), ("Connection", "keep-alive"), ("Connection", "Upgrade"),
    ("Upgrade", "tcp"), ("Expect", "100-continue"), ("Transfer-Encoding", "gzip, chunked"),
    ("Transfer-Encoding", "identity"), ("Content-Length", "-1"), ("Content-Length", "abc"),
    ("Content-Length", " 5"), ("Content-Length", "99999999999999999999"),
    ("Content-Length", "5, 5"), ("Content-Length", "+3"), ("Content-Length", "٣"),
    ("Content-Length", "0"), ("Content-Length", "16777217"), ("User-Agent", "fuzz"),
    ("X-Registry-Auth", "e30="), ("X-Registry-Auth", "%%%"), ("Garbage", "\x00\xff"),
])


@st.composite
def raw_requests(draw):
    """One hostile HTTP request as bytes (or a few, pipelined)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300)), []
    out, methods = b"", []
    for _ in range(draw(st.integers(1, 2))):
        method, path = draw(st.sampled_from(ROUTES))
        method = draw(st.just(method) | st.sampled_from(["GET", "POST", "get", "FOO", "HEAD",
                                                         "DELETE", "PUT", "BREW"]))
        target = draw(targets(path))
        methods.append(method)
        version = draw(st.sampled_from(["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/2.0", "HTTP/0.9",
                                                           "HTTP/1.x", "http/1.1", "HTTP/11",
                                                           "HTTP/1.1 junk", ""]))
        newline = draw(st.sampled_from(["\r\n"] * 4 + ["\n"]))
        body, chunked = draw(bodies())
        headers = draw(st.lists(HEADER_CHOICES, max_size=4))
        if chunked:
            headers.append(("Transfer-Encoding", draw(st.sampled_from(["chunked", "CHUNKED"]))))
        elif body or draw(st.booleans()):
            headers.append(("Content-Length", str(len(body) + draw(st.sampled_from([0, 0, 0, -1,
                                                                                    1, 1000])))))
        extra = draw(st.sampled_from([""] * 8 + ["huge", "many", "fold", "nocolon", "bare-cr"]))
        text = f"{method} {target} {version}".rstrip() + newline
        text += "".join(f"{name}: {value}{newline}" for name, value in headers)
        if extra == "huge":
            text += "X-Huge: " + "h" * 70000 + newline
        elif extra == "many":
            text += "".join(f"X-{i}: {i}{newline}" for i in range(120))
        elif extra == "fold":
            text += f"X-Folded: a{newline} continued{newline}"
        elif extra == "nocolon":
            text += f"NoColonHere{newline}"
        elif extra == "bare-cr":
            text += "X-Cr: a\rb" + newline
        out += text.encode("utf-8", "surrogateescape") + newline.encode() + body
    return out, methods


def test_hostile_http_requests_get_well_formed_answers(fuzz_daemon):
    @fuzz(250, seconds=EXCHANGE_TIMEOUT + 5)
    @given(raw_requests())
    def one(request):
        raw, methods = request
        answers = check_exchange(raw, exchange(fuzz_daemon.socket_path, raw), methods)
        event(f"first answer: {answers[0][0] if answers else 'none (closed, or bare)'}")

    one()
    assert_still_serving(fuzz_daemon)


def mostly(typed):
    """Usually a value of the right type (to get past the first check), now and then any JSON."""
    return st.integers(0, 4).flatmap(lambda i: json_values if i == 0 else typed)


short_text = st.text(max_size=8)
CREATE_KEYS = {
    "Cmd": mostly(st.lists(short_text, max_size=3) | short_text),
    "Entrypoint": mostly(st.lists(short_text, max_size=3) | short_text),
    "Env": mostly(st.lists(st.sampled_from(["A=1", "A", "=", "=x", "A=\x00", "PATH=/x"]) |
                           short_text, max_size=3)),
    "Labels": mostly(st.dictionaries(short_text, short_text, max_size=2)),
    "WorkingDir": mostly(st.sampled_from(["/", "rel", "", "/a/../..", "/\x00"])),
    "Hostname": mostly(st.sampled_from(["h", "", "x" * 300, "bad host", "\x00"]) | short_text),
    "Tty": mostly(st.booleans()), "OpenStdin": mostly(st.booleans()),
    "AttachStdin": mostly(st.booleans()), "StdinOnce": mostly(st.booleans()),
    "User": json_values, "Volumes": json_values, "Healthcheck": json_values,
}
HOST_KEYS = {
    "Memory": mostly(st.integers(-1, 2 ** 40) | st.sampled_from([0, 6291455, 6291456])),
    "MemorySwap": mostly(st.integers(-1, 2 ** 40)),
    "NanoCpus": mostly(st.integers(-1, 10 ** 12)), "CpuQuota": mostly(st.integers(-1, 10 ** 7)),
    "CpuPeriod": mostly(st.integers(-1, 10 ** 7)), "PidsLimit": mostly(st.integers(-1, 10 ** 6)),
    "AutoRemove": mostly(st.booleans()),
    "Binds": mostly(st.lists(st.sampled_from(["/tmp:/x", "rel:/x", "/nonexistent-fuzz:/x:ro",
                                              "a:b:c:d", "/tmp:/x:zz", ":", "/tmp:rel",
                                              "/tmp:/x\x00"]), max_size=2)),
    "NetworkMode": mostly(st.sampled_from(["none", "host", "default", "bridge", "container:x",
                                           "no-such-net", "../x", "\x00", "", "x" * 300])),
    "PortBindings": mostly(st.dictionaries(
        st.sampled_from(["80/tcp", "80/udp", "80", "x/tcp", "", "0/tcp", "99999", "80/TCP",
                         "80/sctp", "1-2/tcp"]),
        mostly(st.none() | st.lists(mostly(st.fixed_dictionaries({}, optional={
            "HostIp": mostly(st.sampled_from(["", "127.0.0.1", "::1", "x", "[::1]", "0.0.0.0",
                                              "1.2.3.4.5", "\x00"])),
            "HostPort": mostly(st.sampled_from(["", "8080", "0", "x", "70000", "1-2", " 80",
                                                "٨٠"]))})), max_size=2)),
        max_size=2)),
    "Dns": mostly(st.lists(st.sampled_from(["8.8.8.8", "x", "", "::1"]), max_size=2)),
    "RestartPolicy": mostly(st.fixed_dictionaries({"Name": mostly(st.sampled_from(
        ["no", "always", "", "on-failure"]))})),
    "LogConfig": mostly(st.fixed_dictionaries({"Type": mostly(st.sampled_from(
        ["json-file", "none", ""]))})),
    "Privileged": mostly(st.booleans()), "CapAdd": mostly(st.lists(short_text, max_size=2)),
    "Mounts": json_values, "Ulimits": json_values, "SecurityOpt": json_values,
}


@st.composite
def create_bodies(draw):
    body = draw(st.fixed_dictionaries(
        {"Image": mostly(st.just("fuzz-no-such-image") | st.sampled_from(
            ["", "UPPER", "a:b:c", "\x00", "sha256:" + "0" * 64, "busybox"]))},
        optional=CREATE_KEYS))
    if draw(st.booleans()):
        body["HostConfig"] = draw(mostly(st.fixed_dictionaries({}, optional=HOST_KEYS)))
    if draw(st.integers(0, 3)) == 0:
        mode = draw(st.sampled_from(["bridge", "none", "default", "x"]))
        body["NetworkingConfig"] = draw(mostly(st.fixed_dictionaries({
            "EndpointsConfig": mostly(st.dictionaries(
                st.sampled_from([mode, "other", "default"]),
                mostly(st.fixed_dictionaries({}, optional={
                    "IPAMConfig": mostly(st.fixed_dictionaries({}, optional={
                        "IPv4Address": mostly(st.sampled_from(["10.0.0.2", "x", ""])),
                        "IPv6Address": json_values})),
                    "Aliases": json_values})), max_size=2))})))
    return body


def test_container_create_bodies_are_checked_not_crashed_on(fuzz_daemon):
    """docker's create body is deep JSON: every wrong type or value is a 4xx, never a 500.
    No image exists, so nothing valid gets further than 'No such image'."""
    @fuzz(250, seconds=EXCHANGE_TIMEOUT + 5)
    @given(create_bodies(), st.none() | st.sampled_from(["ok-name", "/slash", "bad name", "",
                                                          "x" * 300, "%00"]))
    def one(body, name):
        data = json.dumps(body).encode()
        target = "/v1.43/containers/create" + (f"?name={quote(name)}" if name is not None else "")
        raw = (f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data
        answers = check_exchange(raw, exchange(fuzz_daemon.socket_path, raw), ["POST"])
        assert len(answers) == 1
        status = answers[0][0]
        event(f"create: {status} {json.loads(answers[0][2]).get('message', '')[:40]}")
        assert 400 <= status < 500, f"create answered {status}: {answers[0][2][:300]!r}"

    one()
    assert_still_serving(fuzz_daemon)


# =========================================================================================
# Bugs fuzzing found, fixed: each minimal reproduction stays as a regression test. The
# comment above each names its former KNOWN_BUGS key and says what minirt used to do.
# A new bug goes here as a failing test_bug_* (its key in KNOWN_BUGS) until it is fixed.
# A test lists every input it tried that still shows the bug.
# =========================================================================================
def failures(inputs, fails) -> list:
    """The inputs for which ``fails(input)`` returns a description (the bug still shows)."""
    found = []
    for one in inputs:
        what = fails(one)
        if what:
            found.append(f"{one!r}: {what}")
    return found


def refused_with_usage_error(parse, text) -> str | None:
    try:
        result = parse(text)
    except UsageError:
        return None
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return f"accepted as {result}"


# Fixed ref-registry: the registry part of a reference is never checked against docker's
# domain grammar (labels of [A-Za-z0-9-] joined by dots, an optional :PORT of digits).
def test_reference_registry_must_follow_the_domain_grammar():
    bad = failures(["my registry.com/app", "localhost:abc/app", "evil.com#.x.y/app",
                    "a..b/app", "-x.com/app", "a.b:/app", "x.com\n/app"],
                   lambda text: refused_with_usage_error(reference.parse, text))
    assert not bad, bad


# Fixed ref-unicode-tag: TAG = r"[\w][\w.-]{0,127}" matches Unicode letters and digits in
# Python's re; docker's \w is ASCII [A-Za-z0-9_].
def test_reference_tag_must_be_ascii():
    bad = failures(["busybox:t\u00e2g", "busybox:\u0661\u0662", "busybox:\u00e9"],
                   lambda text: refused_with_usage_error(reference.parse, text))
    assert not bad, bad


# Fixed ref-familiar-nested-library: docker's FamiliarName drops "library/" only when one
# component follows; minirt's familiar turns docker.io/library/a/b into "a/b", which names
# docker.io/a/b (POST /images/{name}/tag stores the familiar form: it tags the wrong repo).
def test_familiar_form_of_a_nested_library_repository_names_the_same_repository():
    ref = reference.parse("docker.io/library/a/b:1")
    assert fields(reference.parse(ref.familiar)) == fields(ref), ref.familiar


# Fixed dockerfile-json-depth: _json_form's json.loads raises RecursionError (not ValueError)
# on deep nesting, and parse() lets it escape (COPY/ADD parse their JSON form at parse time).
def test_deeply_nested_json_in_copy_is_a_usage_error():
    text = "FROM scratch\nCOPY " + "[" * 100000 + " a b\n"
    assert refused_with_usage_error(build.parse, text) is None


# Fixed dockerfile-line-breaks: str.splitlines() also breaks at \r \x0b \x0c \x1c \x1d \x1e
# \x85 \u2028 \u2029; docker's parser splits lines at \n (and drops a \r before it) only.
def test_dockerfile_lines_break_only_at_newline():
    def fails(char):
        text = f'FROM scratch\nLABEL a="x{char}y"\n'
        try:
            parsed = [(i.keyword, i.arguments) for i in build.parse(text)]
        except MinirtError as e:
            return f"refused: {e}"
        if parsed != [("FROM", "scratch"), ("LABEL", f'a="x{char}y"')]:
            return f"parsed as {parsed}"
        return None
    bad = failures(list(LINE_BREAKS), fails)
    assert not bad, bad


# Fixed dockerfile-env-tab: _pairs recognises the old form by splitting at any whitespace but
# then partitions at " " only, so a tab after the key becomes part of it (docker: KEY=value).
def test_env_old_form_with_a_tab_separates_key_and_value():
    assert build._pairs("A\tb c", "ENV", 1) == [("A", "b c")]


def pax_member_tar(pax: dict, kind=tarfile.REGTYPE, name="f", linkname="") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.pax_headers = kind, linkname, pax
        tar.addfile(info, io.BytesIO(b""))
    return buffer.getvalue()


def gnu_sparse_tar(name: str, real_size: int) -> bytes:
    """An old-GNU sparse member ('S'): one data byte at the end of ``real_size`` bytes."""
    def octal(n: int, width: int) -> bytes:
        return b"%0*o\x00" % (width - 1, n)
    info = tarfile.TarInfo(name)
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[124:136] = octal(512, 12)                   # one block of stored data
    header[386:398] = octal(real_size - 1, 12)         # sparse map: offset ...
    header[398:410] = octal(1, 12)                     # ... and one byte
    header[483:495] = octal(real_size, 12)             # the real size
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header[:512])
    return bytes(header[:512]) + b"x" + b"\x00" * 511 + b"\x00" * 1024


def base256(n: int, width: int) -> bytes:
    return bytes([0x80]) + n.to_bytes(width - 1, "big")


def tar_with_field(offset: int, width: int, value: bytes) -> bytes:
    """A one-member tar whose header field at ``offset`` is ``value`` (checksum fixed)."""
    header = bytearray(tarfile.TarInfo("f").tobuf(format=tarfile.GNU_FORMAT))
    header[offset:offset + width] = value
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header[:512])
    return bytes(header[:512]) + b"\x00" * 1024


def unpack_in_sandbox(data: bytes, max_bytes: int = layer.MAX_LAYER_BYTES, reader=io.BytesIO):
    """(error or None, bytes written); the sandbox is checked and removed."""
    box = Sandbox()
    try:
        try:
            layer.unpack(reader(data), box.dest, max_bytes)
            error = None
        except Exception as e:  # noqa: BLE001
            error = e
        box.check_outside()
        return error, written_bytes(box.dest)
    finally:
        box.close()


def not_image_error(data: bytes, allow_success: bool = True) -> str | None:
    error, _ = unpack_in_sandbox(data)
    if error is None:
        return None if allow_success else "accepted"
    return None if isinstance(error, ImageError) else f"{type(error).__name__}: {error}"


# Fixed tar-metadata-range: _set_metadata catches only OSError around os.utime and os.chown;
# an out-of-range time or id raises OverflowError/ValueError out of unpack. (Refusing the
# layer with ImageError, or ignoring the field, would both do.)
def test_out_of_range_times_and_owners_are_handled_cleanly():
    inputs = {"PAX mtime=1e400": pax_member_tar({"mtime": "1e400"}),
              "PAX mtime=nan": pax_member_tar({"mtime": "nan"}),
              "PAX mtime=-1e400": pax_member_tar({"mtime": "-1e400"}),
              "base-256 mtime 2**80": tar_with_field(136, 12, base256(2 ** 80, 12))}
    if AS_ROOT:  # only root chowns
        inputs.update({"PAX uid=2**40": pax_member_tar({"uid": str(2 ** 40)}),
                       "PAX gid=2**70": pax_member_tar({"gid": str(2 ** 70)}),
                       "base-256 uid 2**40": tar_with_field(108, 8, base256(2 ** 40, 8))})
    bad = failures(inputs, lambda key: not_image_error(inputs[key]))
    assert not bad, bad


# Fixed tar-nul-name: a PAX path or linkpath may hold a NUL (ustar fields cannot); os.open /
# os.mkdir / os.symlink raise ValueError("embedded null byte").
def test_nul_in_a_pax_name_is_refused_cleanly():
    inputs = {"path a\\0b": pax_member_tar({"path": "a\x00b"}),
              "linkpath a\\0b": pax_member_tar({"linkpath": "a\x00b"}, kind=tarfile.SYMTYPE,
                                               name="l"),
              "path dir\\0/f": pax_member_tar({"path": "dir\x00/f"})}
    bad = failures(inputs, lambda key: not_image_error(inputs[key], allow_success=False))
    assert not bad, bad


# Fixed tar-sparse-size: tarfile presents a sparse member at its real size (the holes read as
# zeros that never pass through _CappedReader), and unpack writes them all: 2 KiB of tar
# become 8 MiB here despite max_bytes=1 MiB (a base-256 real size: terabytes).
def test_sparse_member_is_bounded_by_max_bytes():
    data = gnu_sparse_tar("sparse", 8 * 1024 * 1024)
    assert len(data) == 2048
    error, written = unpack_in_sandbox(data, max_bytes=1024 * 1024)
    assert isinstance(error, ImageError) or written <= 1024 * 1024, \
        f"{written} bytes written with max_bytes=1 MiB ({error!r})"


# Fixed tar-short-read-sniff: _decompressed sniffs the gzip magic with a single read(2); a
# stream that returns 1 byte (BodyReader.read returns at most the current chunk: a chunked
# POST /build whose first chunk is 1 byte) makes a gzip layer look like a plain tar.
def test_gzip_layer_read_in_short_pieces_unpacks():
    data = gzip.compress(valid_layer_seed(), mtime=0)
    error, _ = unpack_in_sandbox(data, reader=lambda d: Trickle(d, 1))
    assert error is None, repr(error)


def http_status(daemon, raw: bytes) -> tuple[int | None, str]:
    data = exchange(daemon.socket_path, raw)
    if not data:
        return None, "no answer: the connection was closed"
    answers, bare = parse_answers(data, ["POST"])
    if not answers:
        return None, f"no status line, only {bare[:200]!r}"
    status, _, body = answers[0]
    return status, body.decode(errors="replace")[:300]


def http_failures(daemon, requests: dict, wanted=(400,)) -> list:
    def fails(key):
        status, body = http_status(daemon, requests[key])
        return None if status in wanted else f"{status} {body}"
    return failures(requests, fails)


# Fixed http-negative-chunk: BodyReader.read takes int("-5", 16) as a chunk size and calls
# rfile.read(-5): ValueError, a 500 and a traceback.
def test_http_negative_chunk_size_is_a_400(fuzz_daemon):
    bad = http_failures(fuzz_daemon, {"chunk -5": b"POST /commit HTTP/1.1\r\nHost: x\r\n"
                                      b"Transfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n0\r\n\r\n"})
    assert not bad, bad


# Fixed http-version-digits: Daemon.__call__ int()s the /vN.M digits, and int() refuses more
# than 4300 digits: ValueError, a 500 and a traceback.
def test_http_absurd_api_version_is_a_400(fuzz_daemon):
    bad = http_failures(fuzz_daemon, {"/v<5000 digits>.1/_ping": b"GET /v" + b"1" * 5000 +
                                      b".1/_ping HTTP/1.1\r\nHost: x\r\n\r\n"})
    assert not bad, bad


# Fixed http-json-depth: Request.json and parse_filters catch ValueError only; json.loads
# raises RecursionError on deep nesting: a 500 and a traceback.
def test_http_deeply_nested_json_is_a_400(fuzz_daemon):
    deep = nested_json(100000)
    bad = http_failures(fuzz_daemon, {
        "POST /commit with [[[...]]] body": (f"POST /commit HTTP/1.1\r\nHost: x\r\n"
                                             f"Content-Length: {len(deep)}\r\n\r\n{deep}").encode(),
        "GET /images/json?filters=[[[...]]]": (f"GET /images/json?filters="
                                               f"{quote(nested_json(5000))} HTTP/1.1\r\n\r\n")
        .encode()})
    assert not bad, bad


# Fixed http-absolute-target: Connection.dispatch calls urlsplit(self.path) before its try:
# urlsplit raises ValueError("Invalid IPv6 URL") for "http://[/...", the exception escapes
# to socketserver (a traceback in the log) and the client gets no answer at all.
def test_http_invalid_absolute_target_gets_an_answer(fuzz_daemon):
    bad = http_failures(fuzz_daemon, {"GET http://[/_ping": b"GET http://[/_ping HTTP/1.1\r\n"
                                      b"Host: x\r\n\r\n"})
    assert not bad, bad


# Fixed http-error-without-status-line: http.server's parse_request leaves request_version at
# "HTTP/0.9" when it refuses the request line, so Connection.send_error's send_response and
# send_header write nothing: the client gets '{"message": ...}' with no status line and no
# headers (dockerd answers "HTTP/1.1 400 Bad Request", or 505).
def test_http_refused_request_line_gets_a_status_line(fuzz_daemon):
    bad = http_failures(fuzz_daemon, {line: line.encode() + b"\r\n\r\n" for line in [
        "GET /_ping HTTP/2.0", "GET /_ping HTTP/1.x", "\x00", "GET /_ping HTTP/1.1 junk",
        "POST /_ping"]}, wanted=(400, 505))
    assert not bad, bad
