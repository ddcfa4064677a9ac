"""``minirt build``: a Dockerfile subset, one layer per step, and the build cache."""

import io
import os
import tarfile

import pytest

from minirt.errors import MinirtError, UsageError
from minirt.image import build
from minirt.image.busybox import find_static_busybox

DOCKERFILE = """\
# the lab's first image
FROM busybox
RUN echo made-by-run > /from-run && \\
    mkdir -p /srv/app
COPY greeting.txt /srv/app/
ENV GREETING=hello PLACE="the lab"
WORKDIR /srv/app
CMD ["sh", "-c", "cat /from-run greeting.txt; echo $GREETING $PLACE; pwd"]
"""


@pytest.fixture
def builds(engine):
    """Tags a test builds; afterwards they, the cache's step images and temp dirs are gone."""
    tags = []
    yield tags
    leftovers = [n for n in os.listdir(engine.root) if n.startswith("minirt-build-")]
    views = [i.name for i in engine.images.images() if i.name.startswith("minirt-build-run")]
    for tag in tags:
        try:
            engine.images.untag(tag)
        except MinirtError:
            pass
    build.prune_cache(engine)
    assert not leftovers, "a build left its temp dir behind"
    assert not views, "a RUN's entrypoint-free view of its image stayed tagged"
    assert not [i.name for i in engine.images.images() if i.name.startswith("minirt-build-")]


def make_context(directory, dockerfile: str, files: dict) -> str:
    directory.mkdir(exist_ok=True)
    (directory / "Dockerfile").write_text(dockerfile)
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(directory)


def do_build(engine, context, tag, **options):
    lines = []
    result = build.build(engine, context, tag=tag, progress=lines.append, **options)
    return result, lines


def test_parse_joins_continuations_skips_comments_and_numbers_lines():
    parsed = build.parse("# syntax and comments\n\nFROM busybox AS base\nRUN a \\\n"
                         "# a comment inside\n    && b\ncmd [\"x\"]\n")
    assert [(i.keyword, i.line) for i in parsed] == [("FROM", 3), ("RUN", 4), ("CMD", 7)]
    assert parsed[1].arguments == "a     && b"
    with pytest.raises(UsageError, match="line 1: the first instruction must be FROM"):
        build.parse("RUN true\n")
    with pytest.raises(UsageError, match="line 3: a second FROM"):
        build.parse("FROM a\nRUN x\nFROM b\n")
    assert build.expand("${A}-$B-${C:-dflt}-${A:+set}-\\$A", {"A": "1", "B": "2"}) == \
        "1-2-dflt-set-$A"


def test_parse_splits_lines_at_newline_only_as_docker_does():
    parsed = build.parse("\ufeffFROM busybox\r\nLABEL a=\"x\u2028y\x0cz\ry\"\r\nRUN a \\\r\n  b\r\n")
    assert [(i.keyword, i.arguments, i.line) for i in parsed] == [
        ("FROM", "busybox", 1), ("LABEL", 'a="x\u2028y\x0cz\ry"', 2), ("RUN", "a   b", 3)]


def test_env_and_label_old_form_split_at_spaces_or_tabs():
    assert build._pairs("A\tb c", "ENV", 1) == [("A", "b c")]
    assert build._pairs("A   b\tc", "LABEL", 1) == [("A", "b\tc")]
    with pytest.raises(UsageError, match="line 4: ENV A needs a value"):
        build._pairs("A", "ENV", 4)


def test_deeply_nested_json_forms_are_one_clear_error():
    for keyword in ("COPY", "RUN", "CMD"):
        with pytest.raises(UsageError, match=f"line 2: {keyword}'s brackets nest more than"):
            build.parse(f"FROM scratch\n{keyword} " + "[" * 100000 + " a b\n")
    assert build._json_form('["sh", "-c", "echo [[x]]"]') == ["sh", "-c", "echo [[x]]"]
    assert build._json_form('[["a"], "b"]') is None, "a list in the list: the shell form"


def test_build_runs_copies_configures_and_a_rebuild_hits_the_cache(engine, builds, tmp_path):
    context = make_context(tmp_path / "ctx", DOCKERFILE, {"greeting.txt": "copied\n"})
    builds.append("built-app:1")
    first, lines = do_build(engine, context, "built-app:1")
    assert lines[0] == "Step 1/6 : FROM busybox" and "Successfully tagged built-app:1" in lines
    assert not any(step["cached"] for step in first.steps)
    output = engine.run("built-app:1").output
    assert output == "made-by-run\ncopied\nhello the lab\n/srv/app\n", output
    image = engine.images.resolve("built-app:1")
    base = engine.images.resolve("busybox")
    assert len(image.layers) == len(base.layers) + 2, "RUN and COPY made a layer each, no more"
    history = image.config["history"]
    assert [h.get("empty_layer", False) for h in history[-5:]] == [False, False, True, True, True]
    assert image.run_config["Cmd"][0] == "sh" and image.run_config["WorkingDir"] == "/srv/app"

    second, lines = do_build(engine, context, "built-app:1")
    assert [step["cached"] for step in second.steps[1:]] == [True] * 5, lines
    assert lines.count(" ---> Using cache") == 5
    assert second.id == first.id, "an unchanged rebuild gives the same image"
    assert not any("Running in" in line for line in lines), "no container ran"


def test_a_changed_file_invalidates_its_step_and_the_later_ones_only(engine, builds, tmp_path):
    dockerfile = ("FROM busybox\nRUN echo one > /one\nCOPY data.txt /data.txt\n"
                  "RUN cat /data.txt > /seen\nENV STAGE=done\n")
    context = make_context(tmp_path / "ctx", dockerfile, {"data.txt": "version 1\n"})
    builds.append("built-change:1")
    first, _ = do_build(engine, context, "built-change:1")
    os.utime(os.path.join(context, "data.txt"), (1, 1))  # a new mtime, the same content
    same, _ = do_build(engine, context, "built-change:1")
    assert same.id == first.id and all(step["cached"] for step in same.steps[1:]), \
        "the cache key is the file's content, not its time"
    (tmp_path / "ctx" / "data.txt").write_text("version 2\n")
    changed, _ = do_build(engine, context, "built-change:1")
    assert [step["cached"] for step in changed.steps[1:]] == [True, False, False, False]
    assert changed.steps[1]["id"] == first.steps[1]["id"]
    assert engine.run("built-change:1", ["cat", "/seen"]).output == "version 2\n"
    fresh, lines = do_build(engine, context, "built-change:1", no_cache=True)
    assert not any(step["cached"] for step in fresh.steps) and " ---> Using cache" not in lines


def test_from_scratch_with_a_copied_static_binary(engine, builds, tmp_path):
    busybox = find_static_busybox()
    dockerfile = 'FROM scratch\nCOPY busybox /busybox\nCMD ["/busybox", "echo", "hi"]\n'
    with open(busybox, "rb") as f:
        context = make_context(tmp_path / "ctx", dockerfile, {"busybox": f.read()})
    os.chmod(os.path.join(context, "busybox"), 0o755)
    builds.append("built-scratch:1")
    result, _ = do_build(engine, context, "built-scratch:1")
    assert len(result.image.layers) == 1, "scratch has no layers: only the COPY's"
    assert engine.run("built-scratch:1").output == "hi\n"
    [layer_dir] = engine.images.unpacked_layers(result.image)
    assert sorted(os.listdir(layer_dir)) == ["busybox"]


def test_add_extracts_a_local_tar_and_run_ignores_the_entrypoint(engine, builds, tmp_path):
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data in (("pkg/readme", b"from the tar\n"), ("pkg/bin/tool", b"#!/bin/sh\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dockerfile = ("FROM busybox\nADD files.tar.gz /opt/\nADD note.txt /opt/note.txt\n"
                  'ENTRYPOINT ["cat"]\nRUN echo ran > /ran\nLABEL team="lab one"\nUSER nobody\n'
                  'CMD ["/opt/pkg/readme", "/opt/note.txt", "/ran"]\n')
    context = make_context(tmp_path / "ctx", dockerfile,
                           {"files.tar.gz": archive.getvalue(), "note.txt": "plain\n"})
    builds.append("built-add:1")
    result, _ = do_build(engine, context, "built-add:1")
    assert engine.run("built-add:1").output == "from the tar\nplain\nran\n"
    config = result.image.run_config
    assert config["Labels"] == {"team": "lab one"} and config["User"] == "nobody"
    assert config["Entrypoint"] == ["cat"], "the RUN step did not change the entrypoint"


def test_unsupported_instruction_is_one_clear_error(engine, builds, tmp_path):
    context = make_context(tmp_path / "ctx", "FROM busybox\nRUN echo x > /x\nEXPOSE 80\n", {})
    with pytest.raises(UsageError, match=r"line 3: EXPOSE is not supported") as caught:
        do_build(engine, context, "built-never:1")
    assert "\n" not in str(caught.value)
    assert not engine.containers(), "nothing ran: the Dockerfile is checked first"
    with pytest.raises(MinirtError, match="not found"):
        do_build(engine, make_context(tmp_path / "ctx2", "FROM busybox\nCOPY nothing /\n", {}),
                 "built-never:1")


def test_failing_run_fails_the_build_and_leaves_no_container(engine, builds, tmp_path):
    context = make_context(tmp_path / "ctx", "FROM busybox\nRUN echo about to fail; exit 3\n", {})
    with pytest.raises(build.BuildError) as caught:
        do_build(engine, context, "built-never:1")
    message = str(caught.value)
    assert "step 2/2" in message and "non-zero code: 3" in message and "about to fail" in message
    assert caught.value.exit_code == 1
    assert not engine.containers(), "the failed step's container was removed"
    with pytest.raises(MinirtError):
        engine.images.resolve("built-never:1")


def test_images_built_from_one_base_share_its_layer_dirs(engine, builds, tmp_path):
    ids = {}
    for word in ("a", "b"):
        dockerfile = f"FROM busybox\nCOPY shared.txt /shared.txt\nRUN echo {word} > /{word}\n"
        context = make_context(tmp_path / word, dockerfile, {"shared.txt": "same bytes\n"})
        builds.append(f"built-share-{word}:1")
        result, _ = do_build(engine, context, f"built-share-{word}:1")
        ids[word] = engine.images.unpacked_layers(result.image)  # top first
    base = engine.images.unpacked_layers(engine.images.resolve("busybox"))
    a, b = ids["a"], ids["b"]
    assert a[-len(base):] == b[-len(base):] == base, "the base layer: one directory on disk"
    assert a[1] == b[1], "the same COPY on the same parent: the cache shares its layer too"
    assert a[0] != b[0]
