# kqi: `make run` starts the server, `make test` runs every test, `make sim` compares scheduling policies
# on the openb trace. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench sim clean

$(VENV)/bin/activate:
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { apt-get update -q && apt-get install -y -q python3-venv python3-pip; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

$(VENV)/.run-deps: requirements.txt pyproject.toml $(VENV)/bin/activate
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q -e .
	touch $@

$(VENV)/.dev-deps: requirements.txt requirements-dev.txt pyproject.toml $(VENV)/bin/activate
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	$(VENV)/bin/pip install -q -e .
	touch $@ $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(PY) kqi_app.py run

test: $(VENV)/.dev-deps lint
	bash scripts/test-deps.sh
	$(PY) -m pytest

# ruff, and the import contracts (layers, a pure scheduler core, no Flask in the domain, no cycles)
lint: $(VENV)/.dev-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: $(VENV)/.dev-deps
	bash scripts/test-deps.sh
	$(PY) -m bench

sim: $(VENV)/.dev-deps
	$(PY) -m sim --trace sim/traces/openb_first2000.csv --nodes 4 --gpus-per-node 8 --cpu-per-node 96 \
		--memory-gb-per-node 512 --policy all

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
