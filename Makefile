# nft_pyg developer entry points.
#
#   make demo    run the demo (creates .venv and installs pinned deps on first run)
#   make test    check the import layers (lint-imports) and lint (ruff check), run the test
#                suite, then build the docs (warnings as errors) if docs/conf.py exists
#   make lint    only lint-imports and ruff check
#   make docs    build the HTML docs into docs/_build/html
#   make install create/refresh .venv (no-op when pyproject.toml/constraints.txt are unchanged)
#   make clean   remove build/test artefacts;  make distclean  also removes .venv
#   make gpu-check  the prepared check on one GPU (under 8 minutes; CPU fallback without one)
#
# Only a Python >= 3.11 interpreter is needed (tested: 3.11.7). No Fortran compiler:
# escnn is installed with --no-deps, without its optional py3nj dependency.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.installed
# apps: the datasets, tasks, CLI and demo (scikit-learn, scipy, matplotlib);
# test: pytest, import-linter, ruff (and apps).
EXTRAS  := apps,test,escnn-deps,docs,bench
# 2 cores on the reference machine: one pytest-xdist worker each.
PYTEST_WORKERS ?= 2
PYTEST_ARGS    ?=
SPHINX_OPTS    ?= -W -b html
DOCS_OUT       := docs/_build/html

.PHONY: install lint test demo docs clean distclean

install: $(STAMP)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "make install needs Python >= 3.11 (constraints.txt pins Sphinx 9, which needs 3.11), got " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

# The stamp is only written when every step succeeded, so an interrupted
# install is simply redone by the next `make` call.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PIP) install -c constraints.txt -e '.[$(EXTRAS)]'
	$(PIP) install -c constraints.txt --no-deps escnn==1.0.11 lie_learn==0.0.2 mlxtend==0.25.0
	$(PY) -W ignore::UserWarning -c 'import torch, torch_geometric; from escnn import gspaces, nn; print("torch", torch.__version__, "| torch_geometric", torch_geometric.__version__)'
	touch $@

lint: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .

test: lint
	@rc=0; $(PY) -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	  echo "ERROR: pytest collected no tests (exit code 5). A test run that runs no test is a failure." >&2; \
	fi; \
	exit $$rc
	@if [ -f docs/conf.py ]; then \
	  echo "Building docs (warnings are errors)"; \
	  $(VENV)/bin/sphinx-build $(SPHINX_OPTS) docs $(DOCS_OUT); \
	else \
	  echo "No docs/conf.py: docs build skipped"; \
	fi

demo: install
	$(VENV)/bin/nft-pyg demo

docs: install
	@if [ ! -f docs/conf.py ]; then echo "ERROR: docs/conf.py not found" >&2; exit 1; fi
	$(VENV)/bin/sphinx-build $(SPHINX_OPTS) docs $(DOCS_OUT)

clean:
	rm -rf docs/_build build dist .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name '*.egg-info' -prune -exec rm -rf {} + 2>/dev/null || true
	find . -path ./$(VENV) -prune -o -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true

distclean: clean
	rm -rf $(VENV)

# The prepared GPU check (benchmarks/gpu_check.py): device tests on CUDA, operators
# against nfn, a training epoch per model; JSON + markdown in benchmarks/results/.
.PHONY: gpu-check
gpu-check: install
	@$(PY) -c "import nfn, einops" 2>/dev/null || $(PIP) install -c constraints.txt -e ".[bench]"
	$(PY) benchmarks/gpu_check.py
