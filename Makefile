# Two commands do all the set-up on a fresh machine (Python 3.11+ with venv, and make):
#   make serve   the webhook function on http://127.0.0.1:8000, on a local SQLite file
#   make test    lint, then the whole test suite on SQLite, PostgreSQL and MariaDB

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Where the PostgreSQL and MariaDB runs of the suite find a server (Django creates test_* databases there).
POSTGRES_TEST_URL ?= postgres://postgres@127.0.0.1:5432/postgres
MARIADB_TEST_URL ?= mysql://root@127.0.0.1:3306/test

.PHONY: serve test test-sqlite test-postgres test-mariadb lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,mysql]'
	touch $@

serve: $(VENV)/.installed
	$(BIN)/athm migrate --noinput
	ATHM_WEBHOOK_SECRET=$${ATHM_WEBHOOK_SECRET:-local-dev-secret} $(BIN)/athm serve --port $(PORT)

test: lint test-sqlite test-postgres test-mariadb

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-sqlite: $(VENV)/.installed
	DATABASE_URL= $(BIN)/pytest

test-postgres: $(VENV)/.installed
	DATABASE_URL=$(POSTGRES_TEST_URL) $(BIN)/pytest

test-mariadb: $(VENV)/.installed
	DATABASE_URL=$(MARIADB_TEST_URL) $(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
