# Two entry points (README Quick start): `make run` and `make test`. Both create .venv if missing.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export MPLCONFIGDIR ?= $(CURDIR)/.cache/matplotlib

.PHONY: run test test-fast lint clean-venv

$(STAMP): requirements.txt requirements-nodeps.txt requirements-test.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	@touch $@

## Start the main job: the Label Studio ML backend on its embedded defaults (SQLite, BlazePose, CPU).
run: $(STAMP)
	$(PY) -m backend

## The whole suite (slow tests included; GPU tests skip themselves without CUDA).
test: $(STAMP)
	$(PY) -m pytest -m "not gpu"

## The fast default suite (what `pytest` runs with no arguments).
test-fast: $(STAMP)
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)

lint: $(STAMP)
	$(VENV)/bin/ruff check annotation_io model backend tests
