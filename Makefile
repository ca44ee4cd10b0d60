# Two commands from a fresh clone: `make demo` (the default job on a synthetic phantom, no download)
# and `make test` (ruff + pytest). Each creates .venv when missing, installing the CPU torch wheel first
# so pip never pulls a multi-GB CUDA build, then this package with its test extra.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= data/phantom
DEMO_PATIENTS ?= 10
DATASET_DIR ?=
TEST_WORKERS ?= 2

.PHONY: venv test lint demo bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS)

demo: venv
	$(PY) -m acdc_wsss.demo $(if $(DATASET_DIR),--dataset_dir "$(DATASET_DIR)",--phantom_dir "$(DEMO_DIR)" --patients $(DEMO_PATIENTS))

BENCH_DATA = $(if $(DATASET_DIR),"$(DATASET_DIR)",../shared/data/acdc)

bench: venv
	$(PY) bench/preprocess.py --data $(BENCH_DATA) --roundtrip
	$(PY) bench/train.py --data $(BENCH_DATA)

clean:
	rm -rf runs results .pytest_cache .ruff_cache
