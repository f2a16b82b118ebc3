# The two Quick start commands: `make demo` (the main job: the tiny Pile grid in two stages, trained, fitted and
# drawn on this machine) and `make test` (the suite).
# Each creates .venv on first use. torch is installed first, pinned to the CPU build that
# these machines carry, only when the interpreter has none; cluster users bring their own.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench transformers-tests clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m sweeps.launch +grid=pile scale=tiny-two-stage

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

# The measurement scripts of benchmarks/ (each prints ratios measured side by side in one run; docs/benchmarks.md).
bench: $(STAMP)
	$(PY) -m benchmarks.fit_speed
	$(PY) -m benchmarks.model_throughput
	$(PY) -m benchmarks.train_throughput
	$(PY) -m benchmarks.data_path

# transformers' own common model tests on stock Qwen2 and Qwen3 and the ParScale models on them (several minutes
# on one core; downloads the installed transformers' source distribution once): writes transformers-common-tests.md.
# TRANSFORMERS_GIT=<git directory of transformers' repository> [TRANSFORMERS_REF=<commit or tag>]: the generation
# tests are then upstream's, read from that repository (default ref: the installed version's tag).
transformers-tests: $(STAMP)
	$(PY) tests/transformers_common/run.py --report transformers-common-tests.md \
		$(if $(TRANSFORMERS_GIT),--transformers-git $(TRANSFORMERS_GIT)) $(if $(TRANSFORMERS_REF),--ref $(TRANSFORMERS_REF))

clean:
	rm -rf $(VENV) build *.egg-info
