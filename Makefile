# Set-up and the two entry points of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: install demo test test-postgres test-min docs clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet "$(TORCH_PIN)"
	$(PIP) install --quiet -e ".[demo,test,docs]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/hillstrom_funnel.py

# The suite in TEST_WORKERS processes (pytest-xdist): 2 halves its time on the 2-core CI machine;
# `make test TEST_WORKERS=0` runs it in this process alone.
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# The tests that need a database server (tests/test_tuning_postgres.py), beside a throwaway
# PostgreSQL server on the loopback (.ci/with-postgres: started, then stopped and removed at exit).
# .ci/run runs the whole of `make test` that way.
test-postgres: install
	SK_HTLNET_REQUIRE_POSTGRES=1 .ci/with-postgres $(PY) -m pytest -q tests/test_tuning_postgres.py

# The documentation site (docs/: Sphinx, numpydoc, sphinx-gallery, myst-parser) in docs/_build/html,
# warnings as errors. The gallery examples run in their quick mode (a subsample, two epochs);
# `make docs DOCS_QUICK=0` runs them at full size. `make test` builds the same site
# (tests/test_docs.py, in a temporary folder).
DOCS_QUICK ?= 1
DOCS_GENERATED := docs/_build docs/generated docs/auto_examples docs/gen_modules docs/sg_execution_times.rst

docs: install
	rm -rf $(DOCS_GENERATED)
	SK_HTLNET_DOCS_QUICK=$(DOCS_QUICK) $(PY) -m sphinx -W --keep-going -b html docs docs/_build/html
	@echo "Documentation: docs/_build/html/index.html"

# The oldest supported versions (requirements-min.txt, docs/install.md) in a venv of their own,
# rebuilt from scratch whenever requirements-min.txt or pyproject.toml changes.
VENV_MIN := .venv-min
PY_MIN := $(VENV_MIN)/bin/python
PIP_MIN := $(PY_MIN) -m pip

$(VENV_MIN)/.installed: requirements-min.txt pyproject.toml
	rm -rf $(VENV_MIN)
	$(PYTHON) -m venv $(VENV_MIN)
	$(PIP_MIN) install --quiet --upgrade pip
	$(PIP_MIN) install --quiet "$(TORCH_PIN)"
	$(PIP_MIN) install --quiet --only-binary :all: -r requirements-min.txt
	$(PIP_MIN) install --quiet --no-deps -e .
	$(PIP_MIN) check
	touch $@

test-min: $(VENV_MIN)/.installed
	$(PY_MIN) -m pytest -q

clean:
	rm -rf $(VENV) $(VENV_MIN) build *.egg-info .pytest_cache $(DOCS_GENERATED)
