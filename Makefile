# The verbs a user and CI need; every one works on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install run test e2e lint fmt bench check system-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

run: install
	$(VENV)/bin/mirror serve

# Debian packages the tests start as real servers (docker-registry; redis-server; skopeo).
system-deps:
	bash tests/system-deps.sh

# The functional suite runs twice: on the cache directory alone, then with a bucket on a real
# SeaweedFS behind it (tests about the directory itself are marked directory_only).
test: install system-deps
	$(PY) -m pytest $(PYTEST_ARGS)
	$(PY) -m pytest tests/functional --storage=s3 -m "not directory_only" $(PYTEST_ARGS)

e2e: install system-deps
	$(PY) -m pytest -m e2e tests/e2e $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check mirror tests bench
	$(VENV)/bin/ruff format --check mirror tests bench
	$(VENV)/bin/mypy

fmt: install
	$(VENV)/bin/ruff format mirror tests bench
	$(VENV)/bin/ruff check --fix mirror tests bench

bench: install system-deps
	bash tests/system-deps.sh wrk:wrk nginx:nginx strace:strace
	$(PY) -m bench $(BENCH_ARGS)

check: lint test

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
