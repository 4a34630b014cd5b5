# `make demo` and `make test` bootstrap everything they need into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BACKENDS ?= tensorflow jax torch
PYTEST_ARGS ?=
# pytest-xdist worker processes per pass; 0 runs the tests in the pytest process itself.
TEST_WORKERS ?= 2

.PHONY: demo test lint docs bench venv clean

# keras-hub and keras-cv (tests/test_ecosystem.py) go in without their declared dependencies:
# keras-hub's tensorflow-text would install the full `tensorflow` over `tensorflow-cpu`, and
# keras-cv's keras-core is a stale second Keras; their real runtime dependencies come first.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[tensorflow,jax,torch,demo,finetune,export,dev]"
	$(BIN)/python -m pip install --quiet -c constraints.txt kagglehub kagglesdk tokenizers
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt keras-hub keras-cv
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/swinv2 demo

# ruff: lint and format check (part of `make test`).
lint: $(STAMP)
	$(BIN)/ruff check keras_swinv2 keras_swinv2_cli.py tests conversion benchmarks scripts
	$(BIN)/ruff format --check keras_swinv2 keras_swinv2_cli.py tests conversion benchmarks scripts

# The site and its API reference (mkdocs + mkdocstrings), read from the docstrings without
# importing the package; warnings are errors. Part of `make test`.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP) docs/requirements.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -r docs/requirements.txt
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict --site-dir build/site

# The whole suite (after the lint and the docs build), once per Keras backend; then the tutorials, executed and checked by nbval
# (cells tagged `nbval-check-output` must reproduce their stored output) on their backend.
# Tests run in TEST_WORKERS processes (pytest-xdist): much of a test's time is single-threaded
# Python and compilation, so two processes on 2 cores finish a pass 1.1-1.7x sooner. A notebook's
# cells share one kernel, so each notebook stays in one process (--dist loadfile).
NOTEBOOKS ?= $(wildcard tutorials/*.ipynb)
test: $(STAMP)
	@status=0; $(MAKE) --no-print-directory lint || status=1; \
	$(MAKE) --no-print-directory docs || status=1; \
	for backend in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$backend ==="; \
		KERAS_BACKEND=$$backend TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) $(PYTEST_ARGS) tests || status=1; \
	done; \
	if [ -n "$(NOTEBOOKS)" ]; then \
		echo "=== tutorials (nbval) ==="; \
		KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --nbval-lax $(NOTEBOOKS) || status=1; \
	fi; exit $$status

# Speed against the PyTorch peers (see benchmarks/bench.py --help); BENCH_ARGS narrows it.
BENCH_ARGS ?=
bench: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
