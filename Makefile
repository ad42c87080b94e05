# Two entry points that work on a fresh machine: `make serve` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-serve
HOST ?= 127.0.0.1
PORT ?= 8765
PROFILE ?= embedded
# serve's --profile choices (tests/test_makefile.py holds them equal to the command's)
PROFILES := embedded step-audio tiny full-random
# The model folder of the Step-Audio profiles (serve's --model-path): step-audio and full-random cannot start
# without it.
MODEL_PATH ?=
# The embedded profile runs no torch: its `make serve` installs only what it serves with. The Step-Audio profiles
# (tiny, step-audio, full-random) run our torch engine, so they install everything, as `make test` does.
SERVE_NEEDS := $(if $(filter embedded,$(PROFILE)),$(SERVE_STAMP),$(STAMP))
# A variable's value as one shell word, whatever it holds: '...' with each ' in it written '\'' (a MODEL_PATH of
# "Bob's models" was a shell syntax error).
quote = '$(subst ','\'',$(1))'
MODEL_PATH_OPTION = $(if $(MODEL_PATH), --model-path $(call quote,$(MODEL_PATH)))

.PHONY: help serve test venv clean serve-options venv-python
# `make` alone ran the first rule: it made a bare .venv (pip only) and said nothing of what to run next.
.DEFAULT_GOAL := help

help:
	@echo "make serve   set up $(VENV) and run the voice agent on http://$(HOST):$(PORT) (PROFILE=$(PROFILE))"
	@echo "make test    set up $(VENV) and run the whole test suite"
	@echo "make venv    set up $(VENV) as make test does (torch, the engine, the test tools), running nothing"
	@echo "make clean   remove $(VENV)"

# PY picks the Python that makes $(VENV); a venv already there kept the one it was made with, so `make test
# PY=python3.12` quietly tested the old Python. Given PY on the command line, a venv of another Python stops make.
venv-python:
	@[ ! -x $(BIN)/python ] || [ $(call quote,$(origin PY)) != 'command line' ] || [ "$$($(BIN)/python -c\
	  'import sys; print(sys.version)')" = "$$($(PY) -c 'import sys; print(sys.version)' 2>&1)" ] || { echo\
	  "make: $(VENV) runs $$($(BIN)/python --version 2>&1), not PY=$(PY) ($$($(PY) --version 2>&1)): make clean,"\
	  "then make $(MAKECMDGOALS) PY=$(PY)" >&2; exit 1; }

# Order-only on the check: it runs whether the venv is there or not.
$(BIN)/python: | venv-python
	@# A PY that is not installed read as "is ...: not found; needs Python 3.11 or newer", as if it were too old.
	@command -v $(PY) >/dev/null || { echo "make: $(PY) not found (PY names the Python that builds $(VENV));"\
	  "install it, or pick one you have: make $(MAKECMDGOALS) PY=python3.11 (or python3.12, ...)" >&2; exit 1; }
	@# An older Python fails only after minutes of installing, in a pip resolver message: say it first.
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "make: $(PY) is $$($(PY) --version 2>&1);"\
	  "stepaudio-rt needs Python 3.11 or newer: make $(MAKECMDGOALS) PY=python3.11 (or python3.12, ...)" >&2; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Beckett's speech for the README's examples and the tests, without its runtime deps: we only read its wav files.
# Last in each install, and taken out before the next: a pip install with it present reports its deps as missing
# ("ERROR: ... moonshine-voice 0.1.5 requires ..."), which `make test` after `make serve` printed.
INSTALL_SAMPLE_SPEECH := $(BIN)/pip install -q --no-deps 'moonshine-voice==0.1.5'
REMOVE_SAMPLE_SPEECH := $(BIN)/pip uninstall -q -y moonshine-voice 2>/dev/null || true

# Order-only on the venv: a venv newer than a stamp is no reason to install again.
$(SERVE_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(REMOVE_SAMPLE_SPEECH)
	$(BIN)/pip install -q -c constraints.txt -e '.[embedded,mqtt,remote]'
	$(INSTALL_SAMPLE_SPEECH)
	touch $@

# Everything, serving included.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(REMOVE_SAMPLE_SPEECH)
	# torch first, pinned: from PyPI, Linux gets the CUDA build (with its nvidia-* packages about 4.7 GB installed).
	$(BIN)/pip install -q -c constraints.txt 'torch==2.13.0'
	$(BIN)/pip install -q -c constraints.txt -e '.[embedded,engine,kernels,mqtt,remote,test]'
	$(INSTALL_SAMPLE_SPEECH)
	touch $@ $(SERVE_STAMP)

venv: $(STAMP)

# Before anything installs: a mistyped PROFILE is not `embedded`, and step-audio or full-random cannot start without
# MODEL_PATH, so their first `make serve` spent minutes installing torch (3.7 GB) for serve then to refuse them; a
# PORT or HOST serve cannot take was refused only after the install too. HOST: a host name or an IP address, not a
# URL or a HOST:PORT (an IPv6 address has two colons or more).
serve-options:
	@case $(call quote,$(PORT)) in ''|*[!0-9]*|??????*) false;; esac && [ $(call quote,$(PORT)) -le 65535 ] ||\
	  { echo "make: PORT=$(PORT) is not a port: a whole number from 0 to 65535, e.g. make serve PORT=8800" >&2; exit 1; }
	@case $(call quote,$(HOST)) in ''|*[!A-Za-z0-9.:%_-]*) host=;; *:*:*) host=ok;; *:*) host=;; *) host=ok;; esac;\
	  [ -n "$$host" ] || { echo "make: HOST=$(HOST) is not an address to listen on: an IP address or host name"\
	  "such as 127.0.0.1 or 0.0.0.0 (the port goes in PORT)" >&2; exit 1; }
	@case ' $(PROFILES) ' in *\ $(call quote,$(PROFILE))\ *) ;; *) echo "make: PROFILE=$(PROFILE) is not a profile;"\
	  "choose from $(PROFILES)" >&2; exit 1;; esac
	@case $(call quote,$(PROFILE):$(MODEL_PATH)) in step-audio:|full-random:) echo "make: PROFILE=$(PROFILE) needs"\
	  "MODEL_PATH=DIR, the Step-Audio model folder: make serve PROFILE=$(PROFILE) MODEL_PATH=DIR" >&2; exit 1;; esac
	@# Serve refuses both, but only once the install is done; its words name --profile, which make does not take.
	@[ $(call quote,$(PROFILE)) != embedded ] || [ -z $(call quote,$(MODEL_PATH)) ] || { echo "make: MODEL_PATH is"\
	  "a Step-Audio model folder, which PROFILE=embedded does not use: make serve PROFILE=step-audio"\
	  "MODEL_PATH=DIR (or PROFILE=tiny, full-random)" >&2; exit 1; }
	@[ -z $(call quote,$(MODEL_PATH)) ] || [ -d $(call quote,$(MODEL_PATH)) ] || { echo "make: MODEL_PATH=$(MODEL_PATH)"\
	  "is not a folder: the Step-Audio model folder, which holds Step-Audio-Tokenizer/, Step-Audio-Chat/ and"\
	  "Step-Audio-TTS-3B/" >&2; exit 1; }

# The checks come before anything installs under `make -j` too, where serve's prerequisites ran side by side:
# `make -j4 serve PORT=abc` made the venv while they ran. Only for serve: `make test` has no checks to wait for.
ifneq ($(filter serve,$(MAKECMDGOALS)),)
$(BIN)/python $(STAMP) $(SERVE_STAMP): | serve-options
endif

serve: serve-options $(SERVE_NEEDS)
	$(BIN)/stepaudio-rt serve --host $(HOST) --port $(PORT) --profile $(PROFILE)$(MODEL_PATH_OPTION)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV)
