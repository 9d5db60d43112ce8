# `make demo` and `make test` do all set-up on a fresh Debian machine (as root): venv, pinned CPU-disk torch,
# the project, and (for tests) the Debian packages napari needs under Xvfb.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.promptseg-installed
CONSTRAINTS := requirements/constraints.txt
# test processes (pytest-xdist), one torch thread each: a 2-core CI machine runs the suite in about half the time
# of one process (many tests wait on Qt, files and subprocesses, and tests of one file share their fixtures);
# --durations lists the slowest tests, where the suite's time goes (19.7 min on an AVX2-only CPU, 13.5 with AMX)
TEST_WORKERS ?= 2
APT_PACKAGES := xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 \
	libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0 \
	libdbus-1-3 libfontconfig1

.PHONY: demo test lint benchmark screenshots sysdeps venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS) Makefile requirements/install_groundingdino.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned, so nothing later resolves a different (CUDA, multi-GB) build
	$(PY) -m pip install -q -c $(CONSTRAINTS) torch torchvision
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[all,dev]"
	# the authors' GroundingDINO (tested backend) with headless requirements, so pip's dependency check stays
	# clean (see the script: upstream asks for a Qt build of OpenCV and an old supervision its model never imports)
	requirements/install_groundingdino.sh $(PY) $(CONSTRAINTS)
	$(PY) -m pip check
	touch $(STAMP)

sysdeps:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { \
		echo "installing Debian packages for napari under Xvfb"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; }

demo: $(STAMP)
	PROMPTSEG_OFFLINE=1 $(PY) -m napari_promptseg._demo --output results

test: $(STAMP) sysdeps
	$(PY) -m ruff check src tests benchmarks
	OMP_NUM_THREADS=1 xvfb-run -a -s "-screen 0 1280x1024x24" $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

benchmark: $(STAMP)
	$(PY) benchmarks/bench_segmenter.py --output benchmarks/results

# the README's screenshots: each widget docked in a real viewer under Xvfb, run on the bundled sample data
screenshots: $(STAMP) sysdeps
	PROMPTSEG_OFFLINE=1 xvfb-run -a -s "-screen 0 1280x1024x24" $(PY) benchmarks/screenshots.py --output docs/images

clean:
	rm -rf $(VENV) results .pytest_cache
