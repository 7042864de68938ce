# llmcourse: two commands, each sets everything up first.
#   make book   build the book into _build/html, every notebook executed
#   make test   run every test, the strict book build included (fast tier on 2 cores, then the slow tier)
#   make fast   the quick check while working: the fast tier (no notebooks, nbgrader or book) on 2 cores
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# nbgrader calls `alembic` from PATH: the venv's bin comes first.
export PATH := $(abspath $(VENV))/bin:$(PATH)
# Progress bars are for people at a terminal or in Jupyter; not in the built book or logs.
BOOK_ENV := TQDM_DISABLE=1

.PHONY: setup book test fast release clean lab

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name llmcourse --display-name "Python (llmcourse)" >/dev/null
	touch $(STAMP)

book: setup
	$(BOOK_ENV) $(VENV)/bin/jupyter-book build . --builder html -W -n --keep-going
	@echo "open _build/html/index.html"

# The fast tier (no notebooks, nbgrader or book) on both cores. One torch thread per worker: two
# workers of two threads each on 2 cores run far slower.
FAST_TIER := OMP_NUM_THREADS=1 $(PY) -m pytest -m "not slow" -n 2

# Every test: the fast tier, then the slow tier (notebooks, nbgrader batches, the book build) in
# one process, whose tests time cells and sandboxes and so run alone.
test: setup
	$(FAST_TIER)
	$(PY) -m pytest -m slow

fast: setup
	$(FAST_TIER) -q

# Regenerate exercises/ from solutions/ (the release is never edited by hand): one nbgrader run
# for every assignment (it globs the id), as tests/test_release_sync.py checks it.
release: setup
	$(VENV)/bin/nbgrader generate_assignment "*" --force

lab: setup
	$(VENV)/bin/jupyter lab exercises

clean:
	rm -rf _build
