# posematch — one entry point for set-up, checks, benchmarks and the demo.
# `make test` and `make demo` install first when .venv is missing.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install constraints lint format test test-slow bench gpu-check demo clean

# constraints.txt pins every library to the versions the README's numbers were measured with.
$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=23.2"
	$(PY) -m pip install -c constraints.txt -e ".[dev,export,fast,imagenet]"
	$(PY) -m posematch.losses.fused  # the loss's C++ CPU solve, built once (~10-25 s)
	touch $(STAMP)

install: $(STAMP)

# After a deliberate upgrade: pin what .venv now holds (local version tags dropped).
constraints: $(STAMP)
	{ head -2 constraints.txt; $(PY) -m pip freeze --exclude-editable | sed 's/+[a-z0-9.]*$$//'; } > constraints.new
	mv constraints.new constraints.txt

lint: $(STAMP)
	$(VENV)/bin/ruff check posematch tests scripts
	$(VENV)/bin/ruff format --check posematch tests scripts
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix posematch tests scripts
	$(VENV)/bin/ruff format posematch tests scripts

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	for b in scripts/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The GPU day's checks (scripts/gpu_check.py): a SKIP line and exit 0 without CUDA.
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py --out results/gpu_check.json

demo: $(STAMP)
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
