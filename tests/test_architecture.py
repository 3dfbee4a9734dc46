"""The house's arrows (docs/architecture.md): athm_core knows nothing of the Lambda handler or of AWS, and
payloads knows nothing of the database. Checked in the source (every import, at any depth) and in a new
process (what importing the modules really loads)."""

import ast
import json
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_cold_start import python

CORE = ROOT / "athm_core"
# What athm_core must never import: the Lambda handler, AWS's SDK, the Lambda adapters.
NOT_IN_CORE = ("handler", "boto3", "botocore", "s3transfer", "mangum", "aws_lambda_powertools")
# The database layer, which payloads must not reach, even through another athm_core module.
DATABASE_LAYER = ("django.db", "django.apps", "athm_core.models")


# Calls that import the module their first argument names.
_DYNAMIC_IMPORTS = {"import_module", "__import__", "import_string"}


def imports_of(path: Path, source: str | None = None) -> set[str]:
    """Every module an athm_core source file imports, anywhere in it (inside functions and conditions
    too), by statement or by a call such as ``importlib.import_module("boto3")`` with a literal name."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # Level 1 is the file's own package, level 2 its parent, and so on.
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
            found.add(base)
            # `from athm_core import processor` imports the module athm_core.processor.
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            if name in _DYNAMIC_IMPORTS and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def core_modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in CORE.rglob("*.py")
    }


def test_athm_core_imports_nothing_of_the_handler_or_aws():
    offences = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in CORE.rglob("*.py")
        for name in imports_of(path)
        if within(name, NOT_IN_CORE)
    }
    assert not offences, sorted(offences)


def test_payloads_reaches_no_database_module_even_through_others():
    modules = core_modules()
    reached, todo = set(), ["athm_core.payloads"]
    while todo:
        module = todo.pop()
        if module in reached:
            continue
        reached.add(module)
        if module in modules:  # athm_core's own: follow its imports too
            todo += imports_of(modules[module])
    assert not [name for name in reached if within(name, DATABASE_LAYER)], sorted(reached)


HIDDEN_IMPORTS = """
import os
from . import processor
from .. import conf


def later():
    import boto3
    from handler import publisher


if os.environ.get("NEVER"):
    import mangum

importlib.import_module("botocore.config")
__import__("aws_lambda_powertools")
import_string("handler.publisher.sns_client")
"""


def test_the_checker_sees_imports_in_functions_conditions_relative_and_dynamic():
    found = imports_of(CORE / "ath" / "somewhere.py", HIDDEN_IMPORTS)
    assert {"athm_core.ath.processor", "athm_core.conf", "boto3", "handler.publisher", "mangum"} <= found
    assert {"botocore.config", "aws_lambda_powertools", "handler.publisher.sns_client"} <= found
    assert {name.split(".")[0] for name in found if within(name, NOT_IN_CORE)} == {
        "boto3",
        "botocore",
        "handler",
        "mangum",
        "aws_lambda_powertools",
    }


LOADED = """
import importlib, json, pkgutil, sys
import athm_core.payloads
database = sorted(m for m in sys.modules if m.startswith(("django.db", "athm_core.models")))
import django
from django.conf import settings
apps = ["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
        "django.contrib.sessions", "django.contrib.messages", "athm_core"]
settings.configure(INSTALLED_APPS=apps, USE_TZ=True,
                   DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}})
django.setup()
import athm_core
names = [m.name for m in pkgutil.walk_packages(athm_core.__path__, "athm_core.")]
for name in names:
    importlib.import_module(name)
aws = sorted(m for m in sys.modules if m.split(".")[0] in %r)
print(json.dumps({"database": database, "modules": len(names), "aws": aws}))
"""


def test_importing_every_athm_core_module_loads_no_aws_and_payloads_loads_no_database():
    result = python(LOADED % (NOT_IN_CORE,), {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["database"] == []
    assert report["aws"] == []
    assert report["modules"] > 20  # the walk did find the app's modules, commands included


@pytest.mark.parametrize("module", ["handler.app", "handler.relay", "handler.reconcile", "handler.migrate"])
def test_each_lambda_entry_point_boots_first(module):
    tree = ast.parse((ROOT / Path(*module.split("."))).with_suffix(".py").read_text(encoding="utf-8"))
    statements = [
        node
        for node in tree.body[1:]  # after the docstring
        if not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
    ]
    first = statements[0]
    if isinstance(first, ast.Try):
        # The migration function catches a failed start, to tell CloudFormation at once.
        first = first.body[0]
    assert isinstance(first, ast.Import) and first.names[0].name == "handler.boot"
