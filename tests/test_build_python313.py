"""The package built for Lambda's python3.13 runtime (``make build`` with ``PYTHON313_ROOT``, as CI runs it)
answers webhooks under Python 3.13: migrations, a completion, its redelivery as a duplicate, inside a
Debian trixie root filesystem (``PYTHON313_ROOT``: .ci/run makes it with debootstrap), laid out as Lambda
lays a function out (/var/task, /opt/python), its modules compiled by that Python first, as the build does
for python3.11. On a machine without such a root it is skipped, unless ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.built_function import BUILT_SECRET, WEBHOOK
from tests.conftest import ROOT, sample

BUILD = ROOT / ".aws-sam" / "build-python3.13"
PYTHON313_ROOT = os.environ.get("PYTHON313_ROOT", "")
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


def _why_not() -> str:
    if not PYTHON313_ROOT:
        return "PYTHON313_ROOT is not set (CI makes a Debian trixie root with Python 3.13: .ci/run)"
    if not (Path(PYTHON313_ROOT) / "usr" / "bin" / "python3.13").exists():
        return f"{PYTHON313_ROOT} has no usr/bin/python3.13"
    if not (BUILD / "template.yaml").exists():
        return "no .aws-sam/build-python3.13: run `make build` with PYTHON313_ROOT set"
    if os.geteuid() != 0:
        return "chroot needs root"
    return ""


if _why_not():
    if os.environ.get("CI"):
        raise pytest.UsageError(_why_not())
    pytest.skip(_why_not(), allow_module_level=True)


@pytest.fixture
def function_root():
    """A directory inside the root holding the webhook function and its layer, as /var/task and
    /opt/python are laid out in Lambda; removed afterwards, whatever happens."""
    inside = Path("/tmp") / f"athm-{uuid.uuid4().hex}"
    outside = Path(PYTHON313_ROOT) / inside.relative_to("/")
    try:
        shutil.copytree(BUILD / "WebhookFunction", outside / "var" / "task")
        shutil.copytree(BUILD / "DependenciesLayer" / "python", outside / "opt" / "python")
        (outside / "work").mkdir()
        yield inside
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def in_root(*command: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROOT, PYTHON313_ROOT, *command],
        input=stdin,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )


def test_the_python313_package_answers_a_webhook_and_its_redelivery(function_root):
    task, layer = function_root / "var" / "task", function_root / "opt" / "python"
    compiled = in_root(
        "python3.13", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
        str(task), str(layer),
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr
    bootstrap = f"import sys\nsys.path[:0] = [{str(task)!r}, {str(layer)!r}]\n"
    env = {
        "AWS_LAMBDA_FUNCTION_NAME": "athm-webhook",
        "DATABASE_URL": f"sqlite:///{function_root}/work/built.sqlite3",
        "ATHM_WEBHOOK_SECRET": BUILT_SECRET,
        "POWERTOOLS_METRICS_DISABLED": "true",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    started = time.monotonic()
    result = in_root(
        "python3.13",
        "-I",
        "-S",
        "-c",
        bootstrap + WEBHOOK,
        env=env,
        stdin=sample("ecommerce_completed.production"),
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [json.loads(line[7:]) for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines[0] == "migrated"
    assert (lines[1]["status"], lines[1]["body"]["outcome"]) == (200, "applied")
    assert (lines[2]["status"], lines[2]["body"]["outcome"]) == (200, "duplicate")
    assert lines[3]["handler"] == f"{task}/handler/app.py"
    assert lines[3]["django"].startswith(f"{layer}/django/")

    # The cold start to the first answer, migrations done: a new process, the database already there.
    started = time.monotonic()
    cold = in_root(
        "python3.13", "-I", "-S", "-c", bootstrap + FIRST_ANSWER, env=env, stdin=sample("payment_received")
    )  # fmt: skip
    cold_ms = (time.monotonic() - started) * 1000
    assert cold.returncode == 0 and "RESULT 200" in cold.stdout, cold.stderr[-4000:]
    print(f"\npython3.13 package: {elapsed * 1000:.0f} ms with migrations, {cold_ms:.0f} ms to a cold answer")


FIRST_ANSWER = """
import os, sys
from handler import app
from handler.local import http_api_event, invoke
path = "/webhook/" + os.environ["ATHM_WEBHOOK_SECRET"]
print("RESULT", invoke(app.lambda_handler, http_api_event("POST", path, body=sys.stdin.read()))["statusCode"])
"""
