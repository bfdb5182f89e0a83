# Two commands on a fresh machine: `make run` (the digits job) and `make test` (lint + tests, with a Label Studio
# server from .venv-labelstudio started by the tests themselves, + the docs built with `mkdocs build --strict`).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The tests run a real Label Studio server: a separate program with its own pinned dependencies, in its own venv.
LS_VENV ?= .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed
LABEL_STUDIO_VERSION := 1.23.2

.PHONY: run test docs bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,docs]'
	touch $(STAMP)

$(LS_STAMP):
	python3 -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q label-studio==$(LABEL_STUDIO_VERSION)
	touch $(LS_STAMP)

run: $(STAMP)
	$(VENV)/bin/lightning-dynamical fit --config configs/digits.yaml

test: $(STAMP) $(LS_STAMP) docs
	$(VENV)/bin/ruff check lightning_dynamical tests benchmarks examples
	$(VENV)/bin/mypy lightning_dynamical
	LABEL_STUDIO_BIN=$(abspath $(LS_VENV))/bin/label-studio $(VENV)/bin/pytest -q

# The reference docs (mkdocs.yml, docs/): a broken link, anchor or API reference fails the build. Output: site/.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/scoring.py

clean:
	rm -rf $(VENV) $(LS_VENV) runs lightning_logs wandb site
