"""Checks for notebook 6 (Container lifecycle, first half): diff and commit, for real.

``check_changes_by_kind`` tries the learner's function on a made-up diff, then
on the diff of a real stopped container the check makes (and removes).
``check_commit_and_run`` gives the learner's function a real stopped container
that wrote a random token into a file; the new image must print the token when
run with no command, the base image must not have the file. Every container and
image the check makes is named ``nb06-check-<pid>-*`` and removed afterwards,
whatever the learner's code did.
"""

import os

from .verdict import run_check

KINDS = {"A": "added", "C": "changed", "D": "deleted"}


def check_prefix() -> str:
    return f"nb06-check-{os.getpid()}"


def _engine(engine):
    if engine is None:
        from ...engine import Engine
        engine = Engine()
    return engine


def _expected(diff_list) -> dict:
    found = {word: [] for word in KINDS.values()}
    for kind, path in diff_list:
        found[KINDS[kind]].append(path)
    return {word: sorted(paths) for word, paths in found.items()}


def _same(got, wanted) -> bool:
    return isinstance(got, dict) and set(got) == set(wanted) and all(
        isinstance(got[k], (list, tuple)) and sorted(got[k]) == wanted[k] for k in wanted)


# --- exercise 6.1: sort a diff --------------------------------------------------------

SAMPLE = [("C", "/etc"), ("A", "/etc/app.conf"), ("D", "/etc/group"), ("A", "/srv"),
          ("A", "/srv/index.html"), ("C", "/tmp")]
# A container run by the check: what it does, and what its diff must say.
SCRIPT = "mkdir /srv && echo hi > /srv/hello.txt && rm /etc/group && echo x >> /etc/passwd"


def check_changes_by_kind(changes_by_kind, engine=None) -> bool:
    """``changes_by_kind(diff_list) -> {"added": [...], "changed": [...], "deleted": [...]}``."""
    return run_check("Exercise 6.1: what did the container change?", _kinds_body,
                     changes_by_kind, engine)


def _kinds_body(verdict, changes_by_kind, engine):
    wanted = _expected(SAMPLE)
    got = changes_by_kind(list(SAMPLE))
    if not verdict.expect(isinstance(got, dict) and set(got) == set(wanted),
                          'returns a dict with the keys "added", "changed" and "deleted"',
                          f"it returned {got!r}" if not isinstance(got, dict) else
                          f"its keys are {sorted(got)}: use the three words, even when a "
                          "list is empty"):
        return
    if not verdict.expect(_same(got, wanted), "a made-up diff of 6 changes is sorted right",
                          f"expected {wanted}, got {got}: A = added, C = changed, "
                          "D = deleted"):
        return
    empty = changes_by_kind([])
    if not verdict.expect(_same(empty, _expected([])), "an empty diff gives three empty lists",
                          f"it gave {empty!r}"):
        return
    # A real container: its diff, read from its overlay upper dir.
    engine = _engine(engine)
    name = f"{check_prefix()}-diff"
    _remove_container(engine, name)
    try:
        result = engine.run("busybox", ["sh", "-c", SCRIPT], name=name, remove=False)
        if result.exit_code != 0:
            verdict.bad(f"the check's own container failed (exit {result.exit_code}): "
                        f"{result.errors.strip()[:120]}")
            return
        real = engine.diff(name)
        got = changes_by_kind(real)
        wanted = _expected(real)
        verdict.expect(_same(got, wanted),
                       f"a real container's diff: added {wanted['added']}, "
                       f"deleted {wanted['deleted']}",
                       f"for {real} it returned {got}")
    finally:
        _remove_container(engine, name)


# --- exercise 6.2: commit and run -----------------------------------------------------

def check_commit_and_run(commit_and_run, engine=None) -> bool:
    """``commit_and_run(engine, container, image, path)`` commits the container as
    ``image`` whose default command prints ``path``, runs it and returns the result."""
    return run_check("Exercise 6.2: a stopped container becomes an image", _commit_body,
                     commit_and_run, engine)


def _commit_body(verdict, commit_and_run, engine):
    engine = _engine(engine)
    container, image = f"{check_prefix()}-box", f"{check_prefix()}-image:v1"
    token = os.urandom(6).hex()
    path = "/check/token.txt"
    _remove_container(engine, container)
    _remove_image(engine, image)
    try:
        made = engine.run("busybox", ["sh", "-c", f"mkdir /check && echo {token} > {path}"],
                          name=container, remove=False)
        if made.exit_code != 0:
            verdict.bad(f"the check's own container failed (exit {made.exit_code})")
            return
        base_layers = len(engine.images.resolve("busybox").layers)
        result = commit_and_run(engine, container, image, path)
        if not verdict.expect(hasattr(result, "exit_code") and hasattr(result, "output"),
                              "returns the result of engine.run",
                              f"it returned {result!r}: return what engine.run(...) returns"):
            return
        try:
            committed = engine.images.resolve(image)
        except Exception:
            verdict.bad(f"an image {image} exists",
                        "engine.commit(container, image, changes=[...]) makes it")
            return
        verdict.expect(len(committed.layers) == base_layers + 1,
                       f"{image} has busybox's {base_layers} layer(s) plus one: the "
                       "container's changes",
                       f"it has {len(committed.layers)} layers")
        cmd = committed.run_config.get("Cmd")
        verdict.expect(cmd == ["cat", path], f'its default command (CMD) is ["cat", "{path}"]',
                       f"its CMD is {cmd}: commit with changes=['CMD [\"cat\", \"{path}\"]'] "
                       "(JSON: double quotes)")
        verdict.expect(result.exit_code == 0 and result.output.strip() == token,
                       f"run with no command, it prints the container's token {token}",
                       f"exit {result.exit_code}, output {result.output.strip()[:60]!r}: run "
                       "the new image, without a command, so its CMD runs")
        base = engine.run("busybox", ["cat", path])
        verdict.expect(base.exit_code != 0, "busybox itself is unchanged: it has no "
                       f"{path} (images are immutable)",
                       f"busybox now has {path}!")
    finally:
        for other in engine.containers():  # the learner's run may have kept its container
            if other.get("image") in (image, image.split(":")[0]) or other.get("image_id") == \
                    _image_id(engine, image):
                _remove_container(engine, other["id"])
        _remove_container(engine, container)
        _remove_image(engine, image)


def _image_id(engine, name):
    try:
        return engine.images.resolve(name).id
    except Exception:
        return None


def _remove_container(engine, ref) -> None:
    try:
        engine.remove_container(ref, force=True)
    except Exception:
        pass


def _remove_image(engine, name) -> None:
    try:
        engine.remove_image(name, force=True)
    except Exception:
        pass


def cleanup(engine=None) -> list[str]:
    """Remove what an interrupted check of this process left: containers, then images."""
    engine, removed = _engine(engine), []
    for container in engine.containers():
        if container.get("name", "").startswith(check_prefix()):
            _remove_container(engine, container["id"])
            removed.append(container["name"])
    for image in engine.images.images():
        if image.name.startswith(check_prefix()):
            _remove_image(engine, image.name)
            removed.append(image.name)
    return removed


__all__ = ["check_changes_by_kind", "check_commit_and_run", "cleanup"]
