# Two commands do everything on a fresh machine with Python 3.11:
#   make run    set up .venv, create the database, start the daemon and the page
#   make test   set up .venv with the test tools (and Debian's chromium), run ruff and pytest

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
DB      ?= data/ticks.db
SYMBOLS ?= btcusdt ethusdt
SOURCE  ?= auto
PORT    ?= 8501

.PHONY: run test lint bench clean

# A stamp per requirements file: pip runs again only when a requirements file changes.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(BIN)/python db_setup.py --db $(DB)
	DB="$(DB)" SYMBOLS="$(SYMBOLS)" SOURCE="$(SOURCE)" PORT="$(PORT)" BIN="$(BIN)" \
		./scripts/run.sh

test: $(VENV)/.dev
	./scripts/ensure_chromium.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-output
