# The two commands: `make demo` and `make test`. Both bootstrap .venv (idempotent).
# `make demo FROM_SCRATCH=1` trains the demo's models instead of sampling the shipped ones.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo demo-checkpoints test test-fast test-slow bench clean

venv: $(STAMP)

# Re-installs only when the packaging metadata changes.
$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.2" setuptools wheel
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipeline.demo $(if $(filter 1 yes true,$(FROM_SCRATCH)),--from-scratch)

# Retrains checkpoints/demo/ from scratch (about as long as `make demo FROM_SCRATCH=1`).
demo-checkpoints: $(STAMP)
	rm -rf runs/demo-checkpoints
	$(BIN)/python -m pipeline.demo_checkpoints

# from_scratch: the demo's full training (5-25 minutes on 2 cores); only `make test-slow` runs it.
test: $(STAMP)
	$(BIN)/python -m pytest -q -ra --durations=15 -m "not from_scratch"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not from_scratch"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -ra --durations=15 -m "slow or from_scratch"

bench: $(STAMP)
	for b in benchmarks/[a-z]*.py; do $(BIN)/python -m benchmarks.$$(basename $$b .py) || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
