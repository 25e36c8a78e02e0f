# The interface: setup, demo, test, lint, bench, up, down. See README.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
ST := $(VENV)/bin/streamtrain
KAFKA_LIBS := infra/kafka/libs
export TF_CPP_MIN_LOG_LEVEL ?= 3
export TF_ENABLE_ONEDNN_OPTS ?= 0
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup demo test test-slow test-fast lint format bench up down clean kafka-jars

setup: $(VENV)/.installed $(KAFKA_LIBS)/.fetched

# Re-installs only when pyproject.toml changes, so re-running is fast.
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

kafka-jars: $(KAFKA_LIBS)/.fetched
$(KAFKA_LIBS)/.fetched: infra/kafka/pom.xml
	@command -v mvn >/dev/null || { echo "error: mvn not found; install Maven (and Java 17+)" >&2; exit 1; }
	@rm -rf $(KAFKA_LIBS)
	cd infra/kafka && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=libs
	@touch $@

demo: setup
	$(PY) -m flows.demo

# Everything but the end-to-end tests marked slow (under 15 minutes on two cores);
# `make test-slow` runs those, and CI (.ci/run) runs both.
test: setup
	$(PY) -m pytest -m "not slow"

test-slow: setup
	$(PY) -m pytest -m slow

# The name `make test` had before it left the slow tests out; kept for scripts that call it.
test-fast: test

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# `make bench QUICK=1` for the quick plan (GNU make has no --quick); BENCH_ARGS passes more.
bench: setup $(VENV)/.river
	$(PY) -m bench $(if $(QUICK),--quick) $(BENCH_ARGS)

# river 0.23.0 (section 5's online peer) declares pandas<3, which the pinned pandas 3.1.1
# breaks on paper only: it is installed without its dependencies. Optional: the bench says
# so when it is missing.
$(VENV)/.river: $(VENV)/.installed
	-$(PY) -m pip install --quiet --no-deps river==0.23.0 && touch $@

up: setup
	$(ST) up

down:
	-$(ST) down

clean: down
	rm -rf .streamtrain
