# The two commands of the README. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= all

.PHONY: run interventions test bench clean slurm-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## make run: the main study on config/config.yaml (snakemake --cores all)
run: $(VENV)/.run-deps
	$(BIN)/snakemake --cores $(CORES)

## make interventions: the learners / TTT / hard-instance studies of config/interventions.yaml
interventions: $(VENV)/.run-deps
	$(BIN)/snakemake --cores $(CORES) --configfile config/interventions.yaml --replace-workflow-config

## SLURM's Debian packages for tests/test_slurm.py (quick once installed); without root or apt-get
## the test skips and says why
slurm-packages:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then bash scripts/slurm-up.sh --install-only; \
	else echo "make: no root or no apt-get here: tests/test_slurm.py will be skipped"; fi

## make test: the whole test suite, workflow, distribution and cluster tests included
test: $(VENV)/.test-deps slurm-packages
	$(BIN)/python -m pytest

bench: $(VENV)/.test-deps
	$(BIN)/python bench/run.py

clean:
	rm -rf results logs benchmarks .snakemake
