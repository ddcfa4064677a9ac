"""Bad input: a clear one-line error, a non-zero exit, and nothing left behind."""

import io
import os
import tarfile

import pytest

from conftest import assert_nothing_left, minirt_cli


def assert_one_line_error(result, code: int, *words: str) -> str:
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_unknown_image(engine, state_root):
    result = minirt_cli("run", "--rm", "no-such-image", "true", state_root=state_root)
    assert_one_line_error(result, 125, "no-such-image", "not found")
    assert_nothing_left(engine)


def test_command_not_in_the_image(engine, state_root):
    result = minirt_cli("run", "--rm", "busybox", "no-such-command", state_root=state_root)
    assert_one_line_error(result, 127, "no-such-command", "not found")
    assert_nothing_left(engine)


def test_command_that_is_not_executable(engine, state_root):
    result = minirt_cli("run", "--rm", "busybox", "/etc/passwd", state_root=state_root)
    assert_one_line_error(result, 126, "/etc/passwd")
    assert_nothing_left(engine)


@pytest.mark.parametrize("flags, words", [
    (["-m", "lots"], ["memory", "lots"]),
    (["-m", "1k"], ["memory", "too small"]),
    (["--cpus", "abc"], ["--cpus", "abc"]),
    (["--cpus", "0"], ["--cpus", "range"]),
    (["--cpus", "999"], ["--cpus", "range"]),
    (["--pids-limit", "x"], ["--pids-limit", "x"]),
    (["-v", "relative:/data"], ["volume", "absolute"]),
    (["-v", "/nonexistent-minirt-path:/data"], ["volume", "does not exist"]),
    (["-e", "=x"], ["environment"]),
])
def test_bad_flags(engine, state_root, flags, words):
    result = minirt_cli("run", "--rm", *flags, "busybox", "true", state_root=state_root)
    assert_one_line_error(result, 125, *words)
    assert_nothing_left(engine)


def make_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_rootfs_without_a_shell(engine, state_root, tmp_path):
    tar = tmp_path / "rootfs.tar"
    tar.write_bytes(make_tar({"etc/motd": b"nothing to run here\n"}))
    imported = minirt_cli("import", str(tar), "no-shell:1", state_root=state_root)
    assert imported.returncode == 0, imported.stderr
    no_cmd = minirt_cli("run", "--rm", "no-shell:1", state_root=state_root)
    assert_one_line_error(no_cmd, 125, "no command")
    no_sh = minirt_cli("run", "--rm", "no-shell:1", "/bin/sh", state_root=state_root)
    assert_one_line_error(no_sh, 127, "/bin/sh", "not found")
    assert_nothing_left(engine)


def test_unsafe_tarball_is_refused_and_nothing_is_written(engine, state_root, tmp_path):
    tar = tmp_path / "evil.tar"
    tar.write_bytes(make_tar({"../../escaped": b"x"}))
    before = sorted(os.listdir(os.path.join(state_root, "layers")))
    result = minirt_cli("import", str(tar), "evil:1", state_root=state_root)
    assert_one_line_error(result, 125, "unsafe path")
    assert sorted(os.listdir(os.path.join(state_root, "layers"))) == before
    assert not [n for n in os.listdir(state_root) if n.startswith(".import-")]
    assert minirt_cli("run", "--rm", "evil:1", "true", state_root=state_root).returncode == 125


def test_container_names_are_unique_and_well_formed(engine, state_root):
    from conftest import container_init_pid, minirt_popen
    import signal
    first = minirt_popen("run", "--rm", "--name", "web", "busybox", "sleep", "30",
                         state_root=state_root)
    try:
        container_init_pid(engine)
        clash = minirt_cli("run", "--rm", "--name", "web", "busybox", "true", state_root=state_root)
        assert_one_line_error(clash, 125, "'web'", "already in use")
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=10)
    assert minirt_cli("run", "--rm", "--name", "web", "busybox", "true",
                      state_root=state_root).returncode == 0, "free again once removed"
    bad = minirt_cli("run", "--rm", "--name", "-bad name", "busybox", "true", state_root=state_root)
    assert bad.returncode != 0
