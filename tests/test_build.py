"""The package built for Lambda's python3.11 runtime runs: ``make test`` builds it into
.aws-sam/build-python3.11 the way ``make build`` builds what ``sam deploy`` uploads (sam build, no Docker;
python3.13 by default, which tests/test_build_python313.py runs under Python 3.13), so that the suite's own
Python, 3.11, can run it.

Each function is started the way Lambda starts it: a fresh interpreter with nothing on its path but the
standard library, the function's code (/var/task) and the layers' python/ folders (/opt/python), without
this checkout or the virtualenv. A packaging mistake fails here instead of in a merchant's account.
"""

import json
import marshal
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.built_function import BUILT_SECRET, TEST_BUILD, WEBHOOK, on_host
from tests.conftest import ROOT, cfn_lint, sample

RUNTIME = "python3.11"
BUILD = TEST_BUILD  # .aws-sam/build-python3.11
LAYER = BUILD / "DependenciesLayer" / "python"
FUNCTIONS = ["WebhookFunction", "RelayFunction", "MigrateFunction", "ReconcileFunction"]
# ELF e_machine values.
_MACHINES = {"arm64": 183, "x86_64": 62}

if not (BUILD / "template.yaml").exists():
    reason = "no .aws-sam/build-python3.11: run `make build-test-package` (make test does)"
    if os.environ.get("CI"):
        raise pytest.UsageError(reason)
    pytest.skip(reason, allow_module_level=True)


def lambda_python(code: str, function: str, *, env: dict[str, str], cwd: Path, stdin: str = ""):
    """Run ``code`` as Lambda would run the built ``function``: only its code and the layer on the path."""
    return on_host(code, function, env=env, cwd=cwd, stdin=stdin, build=BUILD)


def test_the_built_function_answers_a_webhook_on_sqlite(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "AWS_LAMBDA_FUNCTION_NAME": "athm-webhook",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'built.sqlite3'}",
        "ATHM_WEBHOOK_SECRET": BUILT_SECRET,
        "POWERTOOLS_METRICS_DISABLED": "true",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    stdin = sample("ecommerce_completed.production")
    result = lambda_python(WEBHOOK, "WebhookFunction", env=env, cwd=tmp_path, stdin=stdin)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line[7:]) for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines[0] == "migrated"
    first, second = lines[1], lines[2]
    assert first["status"] == 200 and first["body"]["outcome"] == "applied"
    assert second["status"] == 200 and second["body"]["outcome"] == "duplicate"
    where = lines[-1]
    # Everything came from the build, nothing from this checkout or the virtualenv.
    assert where["handler"].startswith(str(BUILD / "WebhookFunction"))
    assert where["django"].startswith(str(LAYER))
    # And from its .pyc files: no module of the package was compiled from its source (where the suite runs
    # on Python 3.11; another Python ignores them, as Lambda's would).
    if sys.version_info[:2] == (3, 11):
        assert [path for path in where["compiled"] if path.startswith(str(BUILD))] == []


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_built_function_holds_the_code_precompiled(function):
    code = BUILD / function
    sources = sorted(path.relative_to(code) for path in code.rglob("*.py"))
    assert Path("handler/app.py") in sources and Path("athm_core/processor.py") in sources
    # Lambda cannot write bytecode next to the code: the build ships it (Python 3.11, the runtime's), with
    # the path each source has in Lambda, and nothing compiled by another Python.
    for source in sources:
        compiled = code / source.parent / "__pycache__" / f"{source.stem}.cpython-311.pyc"
        assert compiled.exists(), f"{function}: {source} is not precompiled"
    assert {path.name.split(".")[-2] for path in code.rglob("*.pyc")} == {"cpython-311"}
    app = (code / "handler" / "__pycache__" / "app.cpython-311.pyc").read_bytes()
    assert marshal.loads(app[16:]).co_filename == "/var/task/handler/app.py"
    assert int.from_bytes(app[4:8], "little") == 0b01  # a hash, not checked against the source
    assert not list(code.rglob("tests")), "the tests do not ship"


def test_the_layer_is_precompiled_for_its_lambda_path():
    django = (LAYER / "django" / "__pycache__" / "__init__.cpython-311.pyc").read_bytes()
    assert marshal.loads(django[16:]).co_filename == "/opt/python/django/__init__.py"
    sources = {path.with_suffix("") for path in LAYER.rglob("*.py")}
    compiled = {path.parent.parent / path.name.split(".")[0] for path in LAYER.rglob("*.cpython-311.pyc")}
    assert sources <= compiled, sorted(sources - compiled)[:5]


def test_the_built_template_deploys_the_runtime_it_was_built_for_whatever_a_stack_said_before():
    """The runtime is written into the built template and its Runtime parameter is gone: `sam deploy`
    sends an existing stack's previous value for each parameter it is not given, and nothing can send a
    runtime the package was not built for. python3.11 has no SnapStart, nor a SnapStart parameter."""
    from samcli.yamlhelper import yaml_parse

    built = yaml_parse((BUILD / "template.yaml").read_text(encoding="utf-8"))
    assert "Runtime" not in built["Parameters"] and "SnapStart" not in built["Parameters"]
    assert built["Globals"]["Function"]["Runtime"] == RUNTIME
    assert "Runtime" not in str(built["Metadata"]["AWS::CloudFormation::Interface"])
    assert {"Ref": "Runtime"} not in _all_nodes(built)
    webhook = built["Resources"]["WebhookFunction"]["Properties"]
    assert webhook["SnapStart"] == {"ApplyOn": "None"} and "HasSnapStart" not in built["Conditions"]
    result = cfn_lint(BUILD / "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def _all_nodes(node):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from _all_nodes(child)


def test_the_layer_holds_the_pinned_dependencies_for_the_templates_architecture():
    template = (ROOT / "template.yaml").read_text(encoding="utf-8")
    architecture = re.search(r"Architectures: \[(\w+)\]", template).group(1)
    binaries = list((LAYER / "psycopg_binary").glob("*.so")) + list(
        (LAYER / "psycopg_binary.libs").glob("*.so*")
    )
    assert binaries, "psycopg's binary is in the layer"
    for binary in binaries:
        header = binary.read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == _MACHINES[architecture]
    installed = {path.name.split("-")[0].lower().replace("_", "-") for path in LAYER.glob("*.dist-info")}
    pinned = {
        name.replace("_", "-") for name in pins("requirements-lambda.txt", "requirements-lambda-al2.txt")
    }
    assert installed == pinned
    # python3.11 runs on Amazon Linux 2: the psycopg whose aarch64 wheels its glibc loads.
    assert (LAYER / "psycopg_binary-3.2.13.dist-info").is_dir()
    # The Lambda runtime brings boto3: it is not shipped again.
    assert not (LAYER / "boto3").exists() and not (LAYER / "botocore").exists()


def pins(*files: str) -> dict[str, str]:
    """The versions pinned in these requirements files, by lowercase name."""
    found = {}
    for file in files:
        for line in (ROOT / file).read_text().splitlines():
            if line.strip() and not line.startswith(("#", "-")):
                requirement = Requirement(line)
                found[requirement.name.lower()] = next(iter(requirement.specifier)).version
    return found


@pytest.mark.parametrize("system", ["al2", "al2023"])
def test_the_pins_satisfy_the_projects_own_ranges(system):
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    ranges = {}
    for spec in [*project["dependencies"], *project["optional-dependencies"]["postgres"],
                 *project["optional-dependencies"]["mysql"]]:  # fmt: skip
        requirement = Requirement(spec)
        ranges[requirement.name.lower()] = requirement.specifier
    pinned = pins("requirements-lambda.txt", f"requirements-lambda-{system}.txt")
    for name, specifier in ranges.items():
        if name == "boto3":
            continue  # provided by the runtime
        assert name in pinned, f"{name} is a dependency but not in requirements-lambda*.txt"
        assert specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside pyproject's {specifier}"
    # psycopg's two halves move together.
    assert pinned["psycopg"] == pinned["psycopg-binary"]


def test_the_dependencies_build_for_x86_64_too(tmp_path):
    # template.yaml says arm64; a merchant who switches to x86_64 builds with LAMBDA_ARCH=x86_64.
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "build-DependenciesLayer",
            "LAMBDA_ARCH=x86_64",
            f"LAMBDA_RUNTIME={RUNTIME}",
            f"ARTIFACTS_DIR={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    [binary] = (tmp_path / "python" / "psycopg_binary").glob("_psycopg*.so")
    assert "x86_64" in binary.name
    assert int.from_bytes(binary.read_bytes()[18:20], "little") == _MACHINES["x86_64"]
    assert list((tmp_path / "python" / "django" / "__pycache__").glob("*.cpython-311.pyc"))
