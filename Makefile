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

# make demo is `glide run configs/demo.yaml` (docs/pipeline.md; a rerun reuses every finished stage), then
# the end summary read from demo-output, the config's run.out (python -m pipeline.demo_summary).
# FROM_SCRATCH=1 is python -m pipeline.demo --from-scratch: the clean CLIP trained first on its own world
# (not a stage of the pipeline: another world), then the same pipeline with base and upsampler trained
# from scratch on the filtered shards, into demo-output-from-scratch (hours on 2 cores).
demo: $(STAMP)
ifneq ($(filter 1 yes true,$(FROM_SCRATCH)),)
	$(BIN)/python -m pipeline.demo --from-scratch
else
	$(BIN)/glide run configs/demo.yaml
	$(BIN)/python -m pipeline.demo_summary demo-output
endif

# Retrains checkpoints/demo/ from scratch (about as long as `make demo FROM_SCRATCH=1`).
demo-checkpoints: $(STAMP)
	rm -rf runs/demo-checkpoints
	$(BIN)/python -m pipeline.demo_checkpoints

# from_scratch: the demo's full training (5-25 minutes on 2 cores); only `make test-slow` runs it.
test: $(STAMP)
	$(BIN)/python -m pytest -q -ra --durations=15 -m "not from_scratch and not demo_scale"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not from_scratch and not demo_scale"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -ra --durations=15 -m "slow or from_scratch or demo_scale"

bench: $(STAMP)
	for b in benchmarks/[a-z]*.py; do $(BIN)/python -m benchmarks.$$(basename $$b .py) || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
