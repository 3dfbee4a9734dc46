# Two commands do all the set-up on a fresh machine (Python 3.11+ with venv, and make):
#   make serve   the webhook function on http://127.0.0.1:8000, on a local SQLite file
#   make test    lint, build the Lambda package, then the whole test suite on SQLite, PostgreSQL and MariaDB
# and one more for deploying: make build (sam build, without Docker), then sam deploy --guided.
# make bench measures the handler against django-athm (bench/run.py; BENCH_ARGS=--help for its options).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Where the PostgreSQL and MariaDB runs of the suite find a server (Django creates test_* databases there).
POSTGRES_TEST_URL ?= postgres://postgres@127.0.0.1:5432/postgres
MARIADB_TEST_URL ?= mysql://root@127.0.0.1:3306/test

# The Lambda platform the package is built for; template.yaml's Architectures must say the same.
LAMBDA_ARCH ?= arm64
LAMBDA_PYTHON ?= 3.11
WHEEL_PLATFORM_arm64 := manylinux2014_aarch64
WHEEL_PLATFORM_x86_64 := manylinux2014_x86_64

.PHONY: serve test test-sqlite test-postgres test-mariadb lint build bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,mysql]'
	touch $@

serve: $(VENV)/.installed
	$(BIN)/athm migrate --noinput
	ATHM_WEBHOOK_SECRET=$${ATHM_WEBHOOK_SECRET:-local-dev-secret} $(BIN)/athm serve --port $(PORT)

test: lint build test-sqlite test-postgres test-mariadb

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-sqlite: $(VENV)/.installed
	DATABASE_URL= $(BIN)/pytest

test-postgres: $(VENV)/.installed
	DATABASE_URL=$(POSTGRES_TEST_URL) $(BIN)/pytest

test-mariadb: $(VENV)/.installed
	DATABASE_URL=$(MARIADB_TEST_URL) $(BIN)/pytest

# What `sam deploy` uploads, in .aws-sam/build (samconfig.toml builds in the source tree, without Docker),
# and the example receivers layer in .aws-sam/receivers-layer.
build: $(VENV)/.installed
	$(BIN)/sam build --template-file template.yaml
	$(BIN)/sam build --template-file examples/receivers_layer/template.yaml --build-dir .aws-sam/receivers-layer
	@# With a root filesystem that has Python 3.13 (CI makes one: .ci/run), the package for python3.13 too,
	@# which tests/test_build_python313.py runs there.
	@if [ -n "$(PYTHON313_ROOT)" ]; then \
		LAMBDA_PYTHON=3.13 $(BIN)/sam build --template-file template.yaml --build-dir .aws-sam/build-python3.13; \
	fi

# The benchmark against django-athm, in django-athm's own virtual environment (.bench/). It builds first:
# the size of what is deployed is one of its figures.
bench: build
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# `sam build` runs these targets (BuildMethod: makefile) with ARTIFACTS_DIR set.
build-DependenciesLayer:
	$(BIN)/python -m pip install --quiet --no-deps --no-compile --only-binary=:all: \
		--implementation cp --python-version $(LAMBDA_PYTHON) --platform $(WHEEL_PLATFORM_$(LAMBDA_ARCH)) \
		--target $(ARTIFACTS_DIR)/python -r requirements-lambda.txt
	$(MAKE) --no-print-directory compile DIR=$(ARTIFACTS_DIR)/python

build-WebhookFunction build-RelayFunction build-MigrateFunction build-ReconcileFunction:
	mkdir -p $(ARTIFACTS_DIR)
	cp -R handler athm_core $(ARTIFACTS_DIR)/
	find $(ARTIFACTS_DIR) -name __pycache__ -prune -exec rm -rf {} +
	$(MAKE) --no-print-directory compile DIR=$(ARTIFACTS_DIR)

# Lambda's code directory is read-only, so Python cannot cache bytecode there: without shipped .pyc files
# every cold start compiles the modules it imports again (measured on the built function: 0.36 s instead
# of 0.27 s to the first answer). Unchecked hashes keep the .pyc files valid whatever timestamps the zip
# gives the sources.
compile:
	@if $(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "$(LAMBDA_PYTHON)".split("."))))'; then \
		$(BIN)/python -m compileall -q -j 0 --invalidation-mode unchecked-hash $(DIR); \
	else echo "not precompiling: $(BIN)/python is not Python $(LAMBDA_PYTHON)"; fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info .aws-sam .bench
