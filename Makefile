# Two entry points that work on a fresh machine: `make serve` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8765
PROFILE ?= embedded

.PHONY: serve test venv clean

$(STAMP): pyproject.toml constraints.txt
	@# A PY that is not installed read as "is ...: not found; needs Python 3.11 or newer", as if it were too old.
	@command -v $(PY) >/dev/null || { echo "make: $(PY) not found (PY names the Python that builds $(VENV));"\
	  "install it, or pick one you have: make $(MAKECMDGOALS) PY=python3.11 (or python3.12, ...)" >&2; exit 1; }
	@# An older Python fails only after minutes of installing, in a pip resolver message: say it first.
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "make: $(PY) is $$($(PY) --version 2>&1);"\
	  "stepaudio-rt needs Python 3.11 or newer: make $(MAKECMDGOALS) PY=python3.11 (or python3.12, ...)" >&2; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: from PyPI, Linux gets the CUDA build (with its nvidia-* packages about 4.7 GB installed).
	$(BIN)/pip install -q -c constraints.txt 'torch==2.13.0'
	$(BIN)/pip install -q -c constraints.txt -e '.[embedded,engine,kernels,mqtt,remote,test]'
	# Test-only data without its runtime deps (we only read its bundled wav files).
	$(BIN)/pip install -q --no-deps 'moonshine-voice==0.1.5'
	touch $(STAMP)

venv: $(STAMP)

serve: $(STAMP)
	$(BIN)/stepaudio-rt serve --host $(HOST) --port $(PORT) --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV)
