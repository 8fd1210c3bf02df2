# The targets the README and CI use. `make install` is implied by the others.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint bench demo demo-cluster clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml scripts/install-system-packages
	scripts/install-system-packages
	$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,speech,kb]'
	touch $(STAMP)

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/failover_detection.py
	$(BIN)/python bench/failover_load.py
	$(BIN)/python bench/node_failure.py
	$(BIN)/python bench/redis_failover.py
	$(BIN)/python bench/rolling_restart.py
	$(BIN)/python bench/rtp_capacity.py
	$(BIN)/python bench/call_setup.py
	$(BIN)/python bench/redis_outage.py --before bench/data/redis-outage-before.json
	$(BIN)/python bench/kb_eval.py
	$(BIN)/python bench/recognizer.py
	$(BIN)/python bench/turn_latency.py
	$(BIN)/python bench/soak.py

demo: install
	PATH="$(abspath $(BIN)):$$PATH" scripts/demo

demo-cluster: install
	PATH="$(abspath $(BIN)):$$PATH" scripts/demo-cluster

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache *.egg-info
