# One gate: `make test` is what CI runs (.ci/run); `make check` adds ruff and mypy.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DATA_DIR ?= index

.PHONY: test check lint typecheck run bench bench-data clean fuzz soak crash reliability

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[test,dev,bench,cluster]"
	touch $(STAMP)

# The vpdq package (Meta's vPDQ: C++ over FFmpeg) is the oracle of tests/test_video.py.
# PyPI has no wheel for it: it builds against FFmpeg's headers (Debian packages, root).
VPDQ_STAMP := $(VENV)/.vpdq-stamp
$(VPDQ_STAMP): $(STAMP)
	$(PY) -c "import vpdq" 2>/dev/null || { \
	  command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  { pkg-config --exists libavcodec libavformat libswscale 2>/dev/null || \
	    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	      pkg-config libavcodec-dev libavformat-dev libavdevice-dev libavfilter-dev \
	      libswresample-dev libswscale-dev libavutil-dev; }; } && \
	  $(PY) -m pip install -q "vpdq>=0.2.5"; } || \
	  echo "vpdq could not be installed: tests/test_video.py skips its oracle checks"
	touch $@

test: $(STAMP) $(VPDQ_STAMP)
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

# Benchmarks (minutes; the 10M search rows need ~3 GB RAM and ~15 min): each script writes
# bench/RESULTS-<name>.md, then bench/RESULTS.md is rebuilt from them.
bench: $(STAMP) bench-data
	$(PY) bench/hashing.py
	$(PY) bench/search.py --sizes 1000000,10000000
	$(PY) bench/robustness.py
	$(PY) bench/robustness.py --tile 320x240 --max-side 2560 --out bench/RESULTS-robustness-holdout.md \
		--plot bench/robustness-holdout.png --title "Robustness, held-out tiling: 320x240 tiles of the same sources"
	$(PY) bench/api.py
	$(PY) bench/scan.py
	$(PY) bench/video.py
	$(PY) bench/assemble.py

# Benign photos for the corpus (Debian wallpaper packages); needs root and apt.
bench-data:
	test -d /usr/share/backgrounds/mate || (apt-get update -q && apt-get install -y -q \
		mate-backgrounds ukui-wallpapers plasma-workspace-wallpapers)

# Reliability (issue 8, RELIABILITY.md): the long variants of tests that `make test`
# runs short. HASHSVC_LONG=1 switches each test in tests/reliability/ to its full length.
fuzz: $(STAMP)
	HASHSVC_LONG=1 $(PY) -m pytest -q -p no:cacheprovider tests/reliability/test_fuzz.py \
		tests/reliability/test_fuzz_video.py
	HASHSVC_LONG=1 $(PY) tests/reliability/fuzz_media.py

soak: $(STAMP)
	HASHSVC_LONG=1 $(PY) -m pytest -q -s tests/reliability/test_soak.py

crash: $(STAMP)
	HASHSVC_LONG=1 $(PY) -m pytest -q -s tests/reliability/test_crash.py

reliability: fuzz soak crash

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
