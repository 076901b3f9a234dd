# rgbd2avatar — every target sets up what it needs on a fresh Debian machine.
#
#   make demo   synthetic subject end to end, outputs in $(DEMO_OUT)
#   make test   the whole test suite (CPU)
#   make bench  benchmarks, JSON results under benchmarks/results/
#   make lint   ruff check and ruff format --check
#
# Set-up: the system libraries open3d loads (libusb-1.0-0 above all), a virtual environment in
# .venv, torch pinned to a CPU build first, then this package in editable mode with the dev
# extra, every other package at the version in constraints.txt (the versions the README's
# numbers were measured with; CONSTRAINTS= resolves them anew, `make lock` records the
# environment's). The stamp file .venv/.installed makes later runs skip the installs until
# pyproject.toml or constraints.txt changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Elsewhere than on this project's machines, add the CPU index, e.g.
#   make test TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu'
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
SYSTEM_PACKAGES := libusb-1.0-0 libgl1 libegl1 libgomp1
DEMO_OUT ?= demo_out
CONSTRAINTS ?= constraints.txt

.PHONY: setup system-packages demo test bench lint lock clean

setup: system-packages $(STAMP)

system-packages:
	@missing=""; \
	for pkg in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$pkg"; \
	done; \
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing system packages:$$missing"; \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	  else \
	    echo "Missing system packages; install them with: sudo apt-get install -y$$missing" >&2; \
	    exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml $(CONSTRAINTS) | system-packages
	test -x $(PY) || $(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install $(TORCH_PIP_ARGS) '$(TORCH)'
	$(PY) -m pip install $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/rgbd2avatar demo $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks.run

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

lock: setup
	$(PY) -m pip freeze --exclude-editable | grep -v '^torch==' > constraints.txt

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache build *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
