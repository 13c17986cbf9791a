# Two commands: `make run` and `make test`. Each sets up whatever this machine lacks first.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: run test setup system venv jars bench clean

run: setup
	$(VENV)/bin/corelane up

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

setup: system venv jars

# Debian packages (Java, Maven, Docker engine, busybox-static, chromium and its driver),
# installed only where missing.
system:
	@bash scripts/install-system-deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

# The broker's jars, resolved by Maven from pipeline/kafka/pom.xml into an ignored cache.
jars: $(STAMP)
	$(VENV)/bin/corelane kafka fetch

bench: setup
	$(PY) bench/collector.py

clean:
	rm -rf $(VENV) .cache .pytest_cache *.egg-info
