"""The package ``make build`` builds for Lambda's default runtime, python3.13 (what ``sam deploy`` uploads,
in .aws-sam/build), answers webhooks under Python 3.13: migrations, a completion, its redelivery as a
duplicate, inside a Debian trixie root filesystem (``PYTHON313_ROOT``: .ci/run makes it with debootstrap),
laid out as Lambda lays a function out (/var/task, /opt/python). Its .pyc files are the ones the build
compiled with Python 3.13 (in that root, where no python3.13 is on PATH), and they are used: nothing of the
package is compiled from source. On a machine without such a root it is skipped, unless ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests import built_function
from tests.built_function import BUILD, FIRST_ANSWER, WEBHOOK, bootstrap, environment, first_answer
from tests.conftest import sample

PYTHON313_ROOT = os.environ.get("PYTHON313_ROOT", "")

_WHY_NOT = built_function.why_not_in_root(PYTHON313_ROOT, BUILD)
if _WHY_NOT:
    if os.environ.get("CI"):
        raise pytest.UsageError(_WHY_NOT)
    pytest.skip(_WHY_NOT, allow_module_level=True)


def test_the_package_is_compiled_by_python313_for_its_lambda_paths():
    for folder in (BUILD / "WebhookFunction", BUILD / "DependenciesLayer" / "python"):
        sources = {path.with_suffix("") for path in folder.rglob("*.py")}
        compiled = {
            path.parent.parent / path.name.split(".")[0] for path in folder.rglob("*.cpython-313.pyc")
        }
        assert sources and sources <= compiled, sorted(sources - compiled)[:5]
        assert {path.name.split(".")[-2] for path in folder.rglob("*.pyc")} == {"cpython-313"}
    # The path recorded in each .pyc is the file's in Lambda (the build compiled them in a copy elsewhere).
    check = (
        "import marshal, sys\n"
        "for path in sys.argv[1:]:\n"
        "    data = open(path, 'rb').read()\n"
        "    print(int.from_bytes(data[4:8], 'little'), marshal.loads(data[16:]).co_filename)\n"
    )
    with inside_root() as (task, layer):
        result = in_root(
            "python3.13", "-c", check,
            f"{task}/handler/__pycache__/app.cpython-313.pyc",
            f"{layer}/django/__pycache__/__init__.cpython-313.pyc",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # 1: hash-based, not checked against the source (whatever timestamps the zip gives it).
    assert result.stdout.splitlines() == ["1 /var/task/handler/app.py", "1 /opt/python/django/__init__.py"]


def inside_root(*, without_pyc: bool = False) -> built_function.InsideRoot:
    """The webhook function and its layer in the root, as Lambda lays them out (built_function.InsideRoot)."""
    return built_function.InsideRoot(PYTHON313_ROOT, BUILD, without_pyc=without_pyc)


def in_root(*command: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    return built_function.in_root(PYTHON313_ROOT, *command, env=env, stdin=stdin)


def cold_answer(task: Path, layer: Path) -> tuple[float, list[str]]:
    """A new process to its first answer, migrations done: milliseconds, and the sources it compiled."""
    function_root = task.parent.parent
    started = time.monotonic()
    cold = in_root(
        "python3.13", "-I", "-S", "-c", bootstrap(task, layer) + FIRST_ANSWER,
        env=environment(function_root), stdin=sample("payment_received"),
    )  # fmt: skip
    elapsed_ms = (time.monotonic() - started) * 1000
    assert cold.returncode == 0 and "RESULT 200" in cold.stdout, (cold.stdout + cold.stderr)[-4000:]
    compiled = first_answer(cold.stdout)["compiled"]
    return elapsed_ms, [path for path in compiled if path.startswith((str(task), str(layer)))]


def test_the_python313_package_answers_a_webhook_and_its_redelivery():
    with inside_root() as (task, layer), inside_root(without_pyc=True) as (bare_task, bare_layer):
        env = environment(task.parent.parent)
        started = time.monotonic()
        result = in_root(
            "python3.13", "-I", "-S", "-c", bootstrap(task, layer) + WEBHOOK,
            env=env, stdin=sample("ecommerce_completed.production"),
        )  # fmt: skip
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr[-4000:]
        lines = [json.loads(line[7:]) for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        assert lines[0] == "migrated"
        assert (lines[1]["status"], lines[1]["body"]["outcome"]) == (200, "applied")
        assert (lines[2]["status"], lines[2]["body"]["outcome"]) == (200, "duplicate")
        assert lines[3]["handler"] == f"{task}/handler/app.py"
        assert lines[3]["django"].startswith(f"{layer}/django/")
        # Every module of the package came from its .pyc: none was compiled from source.
        assert [path for path in lines[3]["compiled"] if path.startswith(str(task.parent.parent))] == []

        # The cold start to the first answer, migrations done: a new process, the database already there;
        # then the same without the .pyc files (the database copied beside them), which compiles every
        # module it imports.
        work = Path(PYTHON313_ROOT) / str(task.parent.parent / "work").lstrip("/")
        bare_work = Path(PYTHON313_ROOT) / str(bare_task.parent.parent / "work").lstrip("/")
        shutil.copytree(work, bare_work, dirs_exist_ok=True)  # the database, with its journal
        with_pyc, compiled = cold_answer(task, layer)
        without_pyc, compiled_without = cold_answer(bare_task, bare_layer)
    assert compiled == []
    assert len(compiled_without) > 100  # what the .pyc files spare
    print(
        f"\npython3.13 package: {elapsed * 1000:.0f} ms with migrations, {with_pyc:.0f} ms to a cold answer"
        f" ({without_pyc:.0f} ms without its .pyc files: {len(compiled_without)} modules compiled)"
    )
