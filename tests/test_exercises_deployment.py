"""Notebook 1's exercises: the reference solutions pass their checks, wrong answers fail."""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "notebooks", "solutions"))

import deployment as solutions  # noqa: E402  (notebooks/solutions/deployment.py)

from minirt.kernel import mounts  # noqa: E402
from minirt.lab.checks import deployment as checks  # noqa: E402


def needs_root():
    if os.geteuid() != 0:
        (pytest.fail if os.environ.get("MINIRT_STRICT") == "1" else pytest.skip)("needs root")


# --- decode_capabilities -------------------------------------------------------------

def test_reference_decoder_passes_on_real_processes():
    needs_root()  # as root the check also reads two children with fewer capabilities
    assert checks.check_decode_capabilities(solutions.decode_capabilities) is True


def test_docker_default_mask_names_fourteen_capabilities():
    names = solutions.decode_capabilities(f"{checks.DOCKER_DEFAULT_MASK:016x}")
    assert len(names) == 14 and {"CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_SETFCAP"} <= names
    assert "CAP_SYS_ADMIN" not in names


def test_decoder_that_skips_bit_zero_fails(capsys):
    def skips_bit_zero(cap_hex):
        mask = int(cap_hex, 16)
        return {name for bit, name in enumerate(checks.CAPABILITIES) if bit and mask >> bit & 1}
    assert checks.check_decode_capabilities(skips_bit_zero) is False
    assert "CAP_CHOWN" in capsys.readouterr().out


def test_decoder_returning_lowercase_names_fails_with_a_spelling_hint(capsys):
    def lowercase(cap_hex):
        return {n.lower() for n in solutions.decode_capabilities(cap_hex)}
    assert checks.check_decode_capabilities(lowercase) is False
    assert "upper case" in capsys.readouterr().out


def test_unfinished_decoder_fails_without_raising(capsys):
    def unfinished(cap_hex):
        raise NotImplementedError
    assert checks.check_decode_capabilities(unfinished) is False
    assert "not written yet" in capsys.readouterr().out


# --- make_disk -----------------------------------------------------------------------

def test_reference_disk_passes_and_leaves_no_mount():
    needs_root()
    before = open("/proc/self/mountinfo").read().count("minirt-lab1-check-")
    assert checks.check_make_disk(solutions.make_disk) is True
    assert open("/proc/self/mountinfo").read().count("minirt-lab1-check-") == before == 0
    assert not [d for d in os.listdir("/tmp") if d.startswith("minirt-lab1-check-")]


def test_disk_of_the_wrong_size_fails(capsys):
    needs_root()

    def decimal_megabytes(path, size_mib):
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib * 1000}k", "tmpfs", path],
                       check=True)
    assert checks.check_make_disk(decimal_megabytes) is False
    assert "size=7m" in capsys.readouterr().out


def test_disk_without_a_size_fails():
    needs_root()
    assert checks.check_make_disk(
        lambda path, size_mib: subprocess.run(["mount", "-t", "tmpfs", "tmpfs", path],
                                              check=True)) is False


def test_disk_that_mounts_nothing_fails(capsys):
    needs_root()
    assert checks.check_make_disk(lambda path, size_mib: None) is False
    assert "something is mounted" in capsys.readouterr().out


def test_disk_that_is_not_tmpfs_fails(tmp_path):
    needs_root()

    def bind_mount(path, size_mib):
        mounts.bind(str(tmp_path), path)
    assert checks.check_make_disk(bind_mount) is False
