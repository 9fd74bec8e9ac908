# One gate: `make test` is what CI runs (.ci/run); `make check` adds ruff and mypy.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DATA_DIR ?= index

.PHONY: test check lint typecheck run bench bench-data demo-index clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[test,dev,bench,cluster]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

check: test lint typecheck

lint: $(STAMP)
	$(VENV)/bin/ruff check hashsvc tests bench
	$(VENV)/bin/ruff format --check hashsvc tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy hashsvc

# The main job: the API on 127.0.0.1:8000 with the demo list in index/.
run: $(STAMP)
	$(PY) -m hashsvc.demo --data-dir $(DATA_DIR)

bench: $(STAMP)
	$(PY) bench/hashing.py
	$(PY) bench/search.py
	$(PY) bench/scan.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
