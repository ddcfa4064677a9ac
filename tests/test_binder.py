"""Binder: the repository builds a lab image with what the lab needs (checked with repo2docker)."""

import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from conftest import require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path: str) -> str:
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def test_environment_yml_installs_the_package_declared_in_pyproject():
    project = tomllib.loads(read("pyproject.toml"))["project"]
    assert "lab" in project["optional-dependencies"]
    environment = read("environment.yml")
    assert "- -e .[lab]" in environment, "dependencies are declared once, in pyproject.toml"
    assert "python=3.11" in environment and project["requires-python"] == ">=3.10"


def test_binder_installs_the_system_packages_and_the_lab():
    apt = read("binder/apt.txt").split()
    assert {"busybox-static", "proot"} <= set(apt)
    post_build = read("binder/postBuild")
    assert post_build.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in post_build
    assert "pip install --no-cache-dir -e '.[lab]'" in post_build and "minirt init" in post_build
    assert os.access(os.path.join(ROOT, "binder", "postBuild"), os.X_OK)


def test_repo2docker_generates_a_dockerfile_that_sets_up_the_lab(tmp_path):
    repo2docker = shutil.which("repo2docker", path=os.path.dirname(sys.executable))
    require(repo2docker is not None, "needs jupyter-repo2docker (a test dependency)")
    clone = tmp_path / "repo"
    if os.path.isdir(os.path.join(ROOT, ".git")):
        subprocess.run(["git", "clone", "-q", ROOT, str(clone)], check=True)
    else:
        shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    result = subprocess.run([repo2docker, "--no-build", "--debug", str(clone)],
                            capture_output=True, text=True, timeout=300)
    dockerfile = result.stdout + result.stderr
    assert result.returncode == 0, dockerfile[-2000:]
    for needed in ("busybox-static", "proot", "./binder/postBuild", "environment.yml"):
        assert needed in dockerfile, f"{needed} missing from the generated Dockerfile"
    if "conda" not in dockerfile and "mamba" not in dockerfile.lower():
        pytest.fail("the Dockerfile does not create the conda environment")
