# minirt lab. Two commands do everything on a fresh machine (see README):
#   make lab    set up, then open JupyterLab on notebooks/
#   make test   set up, then run every test
SHELL := /bin/bash
# Debian's python3, not a per-user one: a venv made from an interpreter in
# root's 0700 home would be unusable by other users.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: lab test setup system venv bytecode image bench fuzz check-lab clean

lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks --ip=127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root)

# Every test: the host's (cgroup v1 hybrid here) and, in a QEMU guest, the runtime's
# kernel tests again on a pure cgroup v2 hierarchy (vmtest/vmtest.mk).
test: setup
	$(BIN)/python -m pytest --nbmake tests notebooks $(PYTEST_ARGS)
	$(MAKE) test-v2-guest

setup: system venv bytecode image

system:
	@scripts/setup-system
	@scripts/fetch-vm-kernel

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# compat mode: a plain path in a .pth file. The default editable mode installs
	# an import hook that costs every `minirt run` ~7 ms of start-up.
	$(BIN)/pip install -q -e '.[lab,test]' --config-settings editable_mode=compat
	# pychroot 0.10.4 pins snakeoil~=0.8.9, which does not build on Python 3.11;
	# snakeoil 0.10.11 works with it (0.11.1+ breaks its import).
	$(BIN)/pip install -q snakeoil==0.10.11
	$(BIN)/pip install -q --no-deps pychroot==0.10.4
	touch $@

# Byte-compile minirt up front: without .pyc files (e.g. PYTHONDONTWRITEBYTECODE=1)
# every `minirt run` would compile its modules from source first.
bytecode: venv
	$(BIN)/python -m compileall -q minirt

image: venv
	$(BIN)/minirt init

# Instructors: run every notebook headless, HTML copies and a summary in lab-check/.
check-lab: setup
	$(BIN)/minirt lab check --out lab-check

bench: setup
	$(BIN)/python bench/startup
	$(BIN)/python bench/registry
	$(BIN)/python bench/daemon
	$(BIN)/python bench/network
	$(BIN)/python bench/load --seconds 30

# Coverage-guided fuzzing of the layer unpacker (atheris), bounded in time:
# make fuzz FUZZ_SECONDS=300. The property-based tests (tests/test_fuzz.py) run in `make test`.
fuzz: setup
	$(BIN)/pip install -q atheris
	$(BIN)/python bench/fuzz-unpack --seconds $(or $(FUZZ_SECONDS),60)

clean:
	rm -rf $(VENV) *.egg-info
include vmtest/vmtest.mk
