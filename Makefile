# Two commands on a fresh machine: `make run` (the digits job) and `make test` (lint + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/lightning-dynamical fit --config configs/digits.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check lightning_dynamical tests benchmarks examples
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/scoring.py

clean:
	rm -rf $(VENV) runs lightning_logs wandb
