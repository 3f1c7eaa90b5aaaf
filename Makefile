# On a fresh machine with Python 3.11 (see docs/development.md):
#   make run         set up .venv from uv.lock, create the database, start the daemon and the page
#                    (NOTIFY="json://... tgram://..." delivers alerts, see docs/alerts.md)
#   make test        set up .venv with the dev group, run ruff, mypy and the whole test suite
#   make check       the fast loop: ruff, mypy and the tests that start no process, page or browser
#   make test-floor  the tests at the lowest versions pyproject.toml allows, in .venv-floor
#   make bench       the benchmarks (BENCHES=writer for one)
#   make lock        re-resolve uv.lock after changing the dependencies in pyproject.toml
# Every environment is installed from uv.lock with --locked: a lock that no longer matches
# pyproject.toml stops the build with uv's message instead of being re-resolved.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
DB      ?= data/ticks.db
SYMBOLS ?= btcusdt ethusdt
SOURCE  ?= auto
PORT    ?= 8501
NOTIFY  ?=
BENCHES ?= analytics writer replay ingest page alerts scan history

# uv itself, pinned, in a venv of its own: nothing is assumed installed but Python.
UV_VERSION := 0.13.9
UV_VENV    := .venv-uv
UV         := $(UV_VENV)/bin/uv
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

FAST := not daemon and not apptest and not browser and not soak and not postgres

# The floor job resolves the lowest allowed version of each direct dependency, and the
# rest as they were on FLOOR_DATE, so that it gives the same answer every day. Move the
# date forward when a floor is raised to a release made after it.
FLOOR_VENV := .venv-floor
FLOOR_DATE := 2026-11-30T00:00:00Z

.PHONY: run test check lint test-floor bench lock clean

$(UV):
	@echo "make: installing uv $(UV_VERSION) into $(UV_VENV) (first time only)"
	$(PYTHON) -m venv $(UV_VENV)
	echo '*' > $(UV_VENV)/.gitignore
	$(UV_VENV)/bin/python -m pip install --quiet uv==$(UV_VERSION)

# A stamp per set of groups: uv runs again only when the lock or pyproject.toml changes.
# The runtime sync is --inexact so that `make run` leaves the dev tools in place.
$(VENV)/.runtime: uv.lock pyproject.toml | $(UV)
	@echo "make: installing the daemon's and the page's dependencies from uv.lock into $(VENV)" \
		"(about a minute the first time)"
	$(UV) sync --locked --no-dev --inexact
	touch $@

$(VENV)/.dev: uv.lock pyproject.toml | $(UV)
	@echo "make: installing the dependencies and the dev tools from uv.lock into $(VENV)"
	$(UV) sync --locked
	touch $@

run: $(VENV)/.runtime
	@echo "make: creating or migrating the database $(DB)"
	$(BIN)/python db_setup.py --db $(DB)
	DB="$(DB)" SYMBOLS="$(SYMBOLS)" SOURCE="$(SOURCE)" PORT="$(PORT)" BIN="$(BIN)" \
		$(if $(NOTIFY),PAIRS_NOTIFY="$(NOTIFY)") \
		./scripts/run.sh

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint
	$(BIN)/python -m pytest -q -n auto -m "$(FAST)"

test: lint
	./scripts/ensure_chromium.sh
	./scripts/ensure_postgres.sh
	$(BIN)/python -m pytest

test-floor: | $(UV)
	$(UV) venv --quiet --allow-existing $(FLOOR_VENV)
	$(UV) pip compile pyproject.toml --group dev --resolution lowest-direct \
		--exclude-newer $(FLOOR_DATE) --quiet --no-header --no-annotate \
		--output-file $(FLOOR_VENV)/requirements.txt
	$(UV) pip sync --quiet --python $(FLOOR_VENV)/bin/python $(FLOOR_VENV)/requirements.txt
	$(UV) pip install --quiet --python $(FLOOR_VENV)/bin/python --no-deps --editable .
	@echo "installed at the floors:"; paste -sd" " $(FLOOR_VENV)/requirements.txt
	$(FLOOR_VENV)/bin/python -m pytest -q -m "not browser"

bench: $(VENV)/.dev
	for name in $(BENCHES); do $(BIN)/python -m bench.bench_$$name || exit 1; done

lock: | $(UV)
	$(UV) lock

clean:
	rm -rf $(VENV) $(FLOOR_VENV) $(UV_VENV) .pytest_cache .ruff_cache .mypy_cache test-output
