# sbgc: one command to install and test, one to install and build the book.
#   make test-fast       install, the tests not marked slow (a test over ~10 s warm is marked): the edit loop
#   make test            install (.venv from the pins in pyproject.toml), pytest (PYTEST_WORKERS=2), every notebook at
#                        the ci profile computed from scratch (into build/ci), then the reference
#                        profile (mnist) rendered from the shipped results cache (read-only: a stale
#                        or damaged entry fails), book build
#   make book            install, train the models PROFILE needs that are missing (none for mnist: shipped),
#                        run every notebook at PROFILE (default mnist, the reference run: loads
#                        results-cache/, computes only what is missing), build book/_build/html
#   make book PROFILE=workstation     (CIFAR-10 on a GPU: prints the models it will train and their
#                        estimated time, trains them resumably, then the book; CACHE=recompute to recompute)
#   make models PROFILE=workstation DRY_RUN=build/dryrun    the same pipeline shrunk to CPU minutes
PYTHON ?= python3
VENV := .venv
PROFILE ?= mnist
CACHE ?= use
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?= --durations=25
# notebooks executed side by side by `make test` and the dry run (CPU; `make book` on a GPU runs one at a time)
CI_JOBS ?= 2
BIN := $(VENV)/bin
# each step of `make test` prints its wall time ("[time] NAME: S s"; .ci/run prints the table of all)
TIMED := bash .ci/timed
STAMP := $(VENV)/.installed
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache
export PYTHONUNBUFFERED := 1

.PHONY: install test test-fast pytest models notebooks book-build book clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[all]'
	touch $@

install: $(STAMP)

pytest: install
	$(TIMED) pytest $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-fast: install
	$(TIMED) "pytest -m 'not slow'" $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

models: install
	$(BIN)/python -m sbgc.book models --profile $(PROFILE) $(if $(DRY_RUN),--dry-run $(DRY_RUN) --jobs $(CI_JOBS))

notebooks: install
	$(BIN)/python -m sbgc.book run --profile $(PROFILE) --cache $(CACHE)

book-build: install
	$(BIN)/python -m sbgc.book build

test: install
	$(TIMED) pytest $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)
	$(TIMED) "ci chapters" $(BIN)/python -m sbgc.book run --profile ci --out build/ci --cache recompute --jobs $(CI_JOBS)
	$(TIMED) "mnist read-only render" $(BIN)/python -m sbgc.book run --profile mnist --cache read-only --jobs $(CI_JOBS)
	$(TIMED) "book build" $(BIN)/python -m sbgc.book build

book: models notebooks book-build

clean:
	rm -rf book/_build book/notebooks build .jax_cache .pytest_cache
