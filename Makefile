# Two commands do all the set-up on a fresh machine (Python 3.11+ with venv, and make):
#   make serve   the webhook function on http://127.0.0.1:8000, on a local SQLite file, with the read-only
#                admin under /admin (make serve ATHM_ADMIN=0: without it); it installs only what serving
#                needs (the package, and moto's server for the README's local SNS walkthrough)
#   make test    lint, build the Lambda package, then the whole test suite on SQLite, PostgreSQL and MariaDB
#                (its first run installs the rest: the test, lint and build tools)
# and one more for deploying: make build (sam build, without Docker), then sam deploy --guided.
# make bench measures the handler against django-athm (bench/run.py; BENCH_ARGS=--help for its options).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Where the PostgreSQL and MariaDB runs of the suite find a server (Django creates test_* databases there).
POSTGRES_TEST_URL ?= postgres://postgres@127.0.0.1:5432/postgres
MARIADB_TEST_URL ?= mysql://root@127.0.0.1:3306/test

# The Lambda runtime the package is built for, and deployed on: one variable for the wheels (their Python
# version, and the newest manylinux that the runtime's glibc loads), the requirements, the Python that
# precompiles, and the runtime written into the built template in place of template.yaml's Runtime parameter
# (so that `sam deploy` deploys that one: docs/deploy.md, "Runtime and SnapStart").
# make build LAMBDA_RUNTIME=python3.12
LAMBDA_RUNTIME ?= python3.13
# The architecture; template.yaml's Architectures must say the same.
LAMBDA_ARCH ?= arm64
LAMBDA_PYTHON := $(patsubst python%,%,$(LAMBDA_RUNTIME))
# Each runtime's operating system: python3.11 runs on Amazon Linux 2 (glibc 2.26), python3.12 and python3.13
# on Amazon Linux 2023 (glibc 2.34). The OS picks the requirements file with its psycopg.
LAMBDA_OS_python3.11 := al2
LAMBDA_OS_python3.12 := al2023
LAMBDA_OS_python3.13 := al2023
GLIBC_MINOR_al2 := 26
GLIBC_MINOR_al2023 := 34
LAMBDA_OS := $(LAMBDA_OS_$(LAMBDA_RUNTIME))
ifeq ($(LAMBDA_OS),)
$(error LAMBDA_RUNTIME=$(LAMBDA_RUNTIME) is not one of python3.11 python3.12 python3.13)
endif
WHEEL_ARCH_arm64 := aarch64
WHEEL_ARCH_x86_64 := x86_64
# Every manylinux tag that glibc loads, newest first: pip takes the first one a package has a wheel for.
WHEEL_PLATFORMS := $(foreach minor,$(shell seq $(GLIBC_MINOR_$(LAMBDA_OS)) -1 17),\
	--platform manylinux_2_$(minor)_$(WHEEL_ARCH_$(LAMBDA_ARCH))) --platform manylinux2014_$(WHEEL_ARCH_$(LAMBDA_ARCH))
LAMBDA_REQUIREMENTS := -r requirements-lambda.txt -r requirements-lambda-$(LAMBDA_OS).txt
# Where `make build` leaves the package (what `sam deploy` uploads), and the python3.11 one that make test builds
# beside it for tests/test_build.py (the suite's own Python is 3.11).
BUILD_DIR ?= .aws-sam/build
TEST_BUILD_DIR := .aws-sam/build-python3.11
# A root filesystem with the runtime's Python in it (CI makes a Debian trixie one with python3.13: .ci/run),
# for precompiling where no python3.X is on PATH.
PYTHON313_ROOT ?=
CHROOT := $(or $(shell command -v chroot),/usr/sbin/chroot)

# SAM CLI's usage telemetry is off for every sam command the Makefile runs (it prints a notice otherwise).
export SAM_CLI_TELEMETRY := 0

.PHONY: serve test test-sqlite test-postgres test-mariadb lint build build-package build-test-package bench clean compile

# What `make serve` needs, and no more: the package and its `serve` extra (moto's server). Where the full
# install below is there (it has all of that), serving uses it, and installs nothing of its own.
SERVING := $(if $(wildcard $(VENV)/.installed),$(VENV)/.installed,$(VENV)/.serving)
$(VENV)/.serving: pyproject.toml
	@echo "Installing what serving needs into $(VENV): the package and moto's server" \
		"(about 40 packages, 200 MB; 20 seconds or so, once)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[serve]'
	touch $@

# Everything else: the test, lint and build tools, and both database drivers. The suite runs the psycopg that
# the default runtime's package ships (requirements-lambda-al2023.txt constrains it); the python3.11 package
# ships an older one (requirements-lambda-al2.txt says why).
$(VENV)/.installed: pyproject.toml requirements-lambda-al2023.txt
	@echo "Installing the test, lint and build tools into $(VENV) (about 120 packages, 510 MB; a minute or so, once)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,serve,postgres,mysql]' -c requirements-lambda-al2023.txt
	touch $@ $(VENV)/.serving

# ATHM_ADMIN defaults to 1 here (the admin under /admin; `athm createsuperuser` makes its user): the
# migrations of the admin's tables run with the same value as the server.
serve: $(SERVING)
	ATHM_ADMIN=$${ATHM_ADMIN:-1} $(BIN)/athm migrate --noinput
	ATHM_ADMIN=$${ATHM_ADMIN:-1} ATHM_WEBHOOK_SECRET=$${ATHM_WEBHOOK_SECRET:-local-dev-secret} \
		$(BIN)/athm serve --port $(PORT)

test: lint build build-test-package test-sqlite test-postgres test-mariadb

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-sqlite: $(VENV)/.installed
	DATABASE_URL= $(BIN)/pytest

test-postgres: $(VENV)/.installed
	DATABASE_URL=$(POSTGRES_TEST_URL) $(BIN)/pytest

test-mariadb: $(VENV)/.installed
	DATABASE_URL=$(MARIADB_TEST_URL) $(BIN)/pytest

# What `sam deploy` uploads, for LAMBDA_RUNTIME, in .aws-sam/build (samconfig.toml builds in the source tree,
# without Docker), and the example receivers layer in .aws-sam/receivers-layer.
build: $(VENV)/.installed
	$(MAKE) --no-print-directory build-package LAMBDA_RUNTIME=$(LAMBDA_RUNTIME) BUILD_DIR=$(BUILD_DIR)
	$(BIN)/sam build --template-file examples/receivers_layer/template.yaml --build-dir .aws-sam/receivers-layer

# The python3.11 package that tests/test_build.py runs with the suite's Python; make test builds it.
build-test-package: $(VENV)/.installed
	$(MAKE) --no-print-directory build-package LAMBDA_RUNTIME=python3.11 BUILD_DIR=$(TEST_BUILD_DIR)

# One package: sam build for LAMBDA_RUNTIME (the build-* targets below read the same variable, which sam's
# make inherits), then the runtime is written into its template in place of the Runtime parameter, so that
# `sam deploy` deploys the runtime the package was built for, whatever an existing stack or samconfig.toml
# last said (sam deploy sends an existing stack's previous value for every parameter it is not given).
build-package:
	$(BIN)/sam build --template-file template.yaml --build-dir $(BUILD_DIR) \
		--parameter-overrides Runtime=$(LAMBDA_RUNTIME)
	$(BIN)/python -c "$$PIN_RUNTIME" $(BUILD_DIR)/template.yaml $(LAMBDA_RUNTIME)

# The built template with its runtime written in: every {"Ref": "Runtime"} becomes the runtime, and the
# Runtime parameter goes. SnapStart: on python3.11 the webhook function's is None and the SnapStart
# parameter goes too; on the others, the SnapStart parameter alone decides.
define PIN_RUNTIME
import sys
from samcli.yamlhelper import yaml_dump, yaml_parse

path, runtime = sys.argv[1:]
template = yaml_parse(open(path).read())
snapstart = runtime != "python3.11"


def pin(node):
    if node == {"Ref": "Runtime"}:
        return runtime
    if isinstance(node, dict):
        if not snapstart and list(node) == ["Fn::If"] and node["Fn::If"][0] == "HasSnapStart":
            return pin(node["Fn::If"][2])
        return {key: pin(value) for key, value in node.items()}
    if isinstance(node, list):
        return [pin(value) for value in node]
    return node


template = pin(template)
gone = ["Runtime"] if snapstart else ["Runtime", "SnapStart"]
for name in gone:
    del template["Parameters"][name]
for group in template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]:
    group["Parameters"] = [name for name in group["Parameters"] if name not in gone]
if snapstart:
    template["Conditions"]["HasSnapStart"] = {"Fn::Equals": [{"Ref": "SnapStart"}, "true"]}
else:
    del template["Conditions"]["HasSnapStart"]
open(path, "w").write(yaml_dump(template))
endef
export PIN_RUNTIME

# The benchmark against django-athm, in django-athm's own virtual environment (.bench/). It builds first:
# the size of what is deployed is one of its figures, and the python3.13 package's cold start is measured
# beside the python3.11 one's (in PYTHON313_ROOT, as root; bench/packages.py), so it builds both.
bench: build build-test-package
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# `sam build` runs these targets (BuildMethod: makefile) with ARTIFACTS_DIR set.
build-DependenciesLayer:
	$(BIN)/python -m pip install --quiet --no-deps --no-compile --only-binary=:all: \
		--implementation cp --python-version $(LAMBDA_PYTHON) $(WHEEL_PLATFORMS) \
		--target $(ARTIFACTS_DIR)/python $(LAMBDA_REQUIREMENTS)
	$(MAKE) --no-print-directory compile DIR=$(ARTIFACTS_DIR)/python LAMBDA_PATH=/opt/python

build-WebhookFunction build-RelayFunction build-MigrateFunction build-ReconcileFunction:
	mkdir -p $(ARTIFACTS_DIR)
	cp -R handler athm_core $(ARTIFACTS_DIR)/
	find $(ARTIFACTS_DIR) -name __pycache__ -prune -exec rm -rf {} +
	$(MAKE) --no-print-directory compile DIR=$(ARTIFACTS_DIR) LAMBDA_PATH=/var/task

# Lambda's code directory is read-only, so Python cannot cache bytecode there: without shipped .pyc files
# every cold start compiles the modules it imports again (docs/deploy.md, "Runtime and SnapStart", has the
# figures). The .pyc must come from the runtime's Python version (a .pyc of another one is ignored), so
# they are compiled by, in order: a python3.X on PATH; the one in PYTHON313_ROOT (with chroot, as root: the
# files are copied into the root, compiled there and copied back, the copy always removed); else not at
# all, with a message. -d records the paths the files have in Lambda (/var/task, /opt/python), so the
# .pyc, and the zip, are the same wherever they were built. Unchecked hashes keep the .pyc files valid
# whatever timestamps the zip gives the sources.
COMPILEALL = -m compileall -q -j 0 --invalidation-mode unchecked-hash -d $(LAMBDA_PATH)
compile:
	@test -n "$(DIR)" -a -n "$(LAMBDA_PATH)" || { echo "compile: DIR and LAMBDA_PATH are needed"; exit 2; }
	@if [ "$$(python$(LAMBDA_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$(LAMBDA_PYTHON)" ]; then \
		echo "precompiling $(DIR) with $$(command -v python$(LAMBDA_PYTHON))"; \
		python$(LAMBDA_PYTHON) $(COMPILEALL) $(DIR); \
	elif [ -n "$(PYTHON313_ROOT)" ] && [ -x "$(PYTHON313_ROOT)/usr/bin/python$(LAMBDA_PYTHON)" ]; then \
		set -e; \
		inside=$$(mktemp -d "$(PYTHON313_ROOT)/tmp/athm-compile.XXXXXXXX"); \
		trap 'rm -rf "$$inside"' EXIT; \
		echo "precompiling $(DIR) with python$(LAMBDA_PYTHON) in $(PYTHON313_ROOT)"; \
		cp -a $(DIR)/. "$$inside/"; \
		$(CHROOT) "$(PYTHON313_ROOT)" /usr/bin/python$(LAMBDA_PYTHON) $(COMPILEALL) "/tmp/$${inside##*/}"; \
		cp -a "$$inside/." $(DIR)/; \
	else \
		echo "not precompiling $(DIR): no python$(LAMBDA_PYTHON) on PATH, and PYTHON313_ROOT has none; the package works," \
			"but every cold start compiles what it imports (docs/deploy.md, Runtime and SnapStart)"; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info .aws-sam .bench
