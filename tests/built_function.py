"""What the tests of a built package, and the benchmark's cold start of the built packages, run in it, and
how they start it the way Lambda runs the webhook function: a fresh interpreter with nothing on its path
but the standard library, the function's code (/var/task) and the layer's python/ folder (/opt/python).
The python3.11 package runs on this machine's Python (``on_host``); the python3.13 one inside a root
filesystem with Python 3.13 (``PYTHON313_ROOT``: .ci/run makes a Debian trixie one), copied there as Lambda
lays a function out (``InsideRoot``) and run with chroot (``in_root``). No Django here: bench/ imports it.

``WEBHOOK`` runs the migrations, then one completion posted twice (applied, then a duplicate), without
boto3. Each line it prints that starts with ``RESULT `` is JSON: ``"migrated"``, the two answers, then where
``handler`` and Django were imported from, with every source file that Python had to compile on the way
(none, when the package's .pyc files are this Python's and are used). Its standard input is the webhook's
body. ``FIRST_ANSWER`` is a cold start on a migrated database: one webhook answered (``first_answer``
reads what it prints)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

BUILT_SECRET = "built-secret-0123456789abcdefghijklmnop"
ROOT = Path(__file__).resolve().parent.parent
# What `make build` builds (python3.13 by default), and the python3.11 package of `make build-test-package`.
BUILD = ROOT / ".aws-sam" / "build"
TEST_BUILD = ROOT / ".aws-sam" / "build-python3.11"
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"

WEBHOOK = """
import sys
compiled = []
def audit(event, args):  # the compile() of a module's source: the import found no .pyc it could use
    if event == "compile" and isinstance(args[1], str) and args[1].endswith(".py"):
        compiled.append(args[1])
sys.addaudithook(audit)
import json, os
from handler.migrate import lambda_handler as migrate
from handler.local import LocalContext, http_api_event, invoke, response_body
print("RESULT", json.dumps(migrate({}, LocalContext())["status"]))
from handler import app
assert "boto3" not in sys.modules
body = sys.stdin.read()
path = "/webhook/" + os.environ["ATHM_WEBHOOK_SECRET"]
for _ in range(2):
    answer = invoke(app.lambda_handler, http_api_event("POST", path, body=body))
    print("RESULT", json.dumps({"status": answer["statusCode"], "body": json.loads(response_body(answer))}))
where = {"handler": app.__file__, "django": sys.modules["django"].__file__, "compiled": compiled}
print("RESULT", json.dumps(where))
"""

# CLOCK_MONOTONIC (time.monotonic) is one clock for every process of the machine, chroot or not: the
# caller notes it before starting the process, and the differences are the cold start's times.
FIRST_ANSWER = """
import sys
compiled = []
sys.addaudithook(lambda event, args: event == "compile" and str(args[1]).endswith(".py")
                 and compiled.append(args[1]))
import json, os, time
from handler import app
from handler.local import http_api_event, invoke
set_up = time.monotonic()
path = "/webhook/" + os.environ["ATHM_WEBHOOK_SECRET"]
status = invoke(app.lambda_handler, http_api_event("POST", path, body=sys.stdin.read()))["statusCode"]
answered = time.monotonic()
print("RESULT", status)
print("COMPILED", json.dumps(compiled))
print("TIMES", json.dumps({"set_up": set_up, "answered": answered}))
"""


def first_answer(stdout: str) -> dict[str, Any]:
    """What ``FIRST_ANSWER`` printed: its answer's status, the sources it compiled, and when (CLOCK_MONOTONIC)
    it was set up and had answered."""
    found: dict[str, Any] = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        if key in ("RESULT", "COMPILED", "TIMES"):
            found[key] = json.loads(value)
    return {"status": found["RESULT"], "compiled": found["COMPILED"], **found["TIMES"]}


def environment(function_root: Path) -> dict[str, str]:
    """The webhook function's environment, its SQLite database in ``function_root``/work."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": "athm-webhook",
        "DATABASE_URL": f"sqlite:///{function_root}/work/built.sqlite3",
        "ATHM_WEBHOOK_SECRET": BUILT_SECRET,
        "POWERTOOLS_METRICS_DISABLED": "true",
        # Lambda's code directory is read-only: nothing compiled at run time is kept.
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def bootstrap(task: Path, layer: Path) -> str:
    return f"import sys\nsys.path[:0] = [{str(task)!r}, {str(layer)!r}]\n"


def built_runtime(build: Path) -> str | None:
    """The runtime the package in ``build`` was built for (written into its template), if built."""
    template = build / "template.yaml"
    if not template.exists():
        return None
    from samcli.yamlhelper import yaml_parse

    return yaml_parse(template.read_text(encoding="utf-8"))["Globals"]["Function"]["Runtime"]


# --- the python3.11 package, on this machine's Python ----------------------------------------------------


def on_host(
    code: str,
    function: str = "WebhookFunction",
    *,
    env: dict[str, str],
    cwd: Path,
    stdin: str = "",
    build: Path = TEST_BUILD,
    python: str = sys.executable,
) -> subprocess.CompletedProcess:
    """Run ``code`` as Lambda would run the built ``function``: only its code and the layer on the path."""
    code = bootstrap(build / function, build / "DependenciesLayer" / "python") + code
    # -I: no PYTHONPATH, no user site; -S: no site-packages (this virtualenv) either.
    return subprocess.run(
        [python, "-I", "-S", "-c", code],
        input=stdin,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- the python3.13 package, in a root filesystem with Python 3.13 ---------------------------------------


def why_not_in_root(python313_root: str, build: Path = BUILD) -> str:
    """What keeps the python3.13 package in ``build`` from running in ``python313_root``, if anything."""
    if not python313_root:
        return "PYTHON313_ROOT is not set (CI makes a Debian trixie root with Python 3.13: .ci/run)"
    if not (Path(python313_root) / "usr" / "bin" / "python3.13").exists():
        return f"{python313_root} has no usr/bin/python3.13"
    runtime = built_runtime(build)
    if runtime is None:
        return f"no {build.relative_to(ROOT)}: run `make build`"
    if runtime != "python3.13":
        return f"{build.relative_to(ROOT)} was built for {runtime}, not python3.13: run `make build`"
    if os.geteuid() != 0:
        return "chroot needs root"
    return ""


class InsideRoot:
    """The webhook function and its layer copied into ``python313_root``, as /var/task and /opt/python are
    laid out in Lambda (optionally without their .pyc files), with a work/ folder beside them; removed
    afterwards, whatever happens. Entering gives the paths of the two inside the root."""

    def __init__(self, python313_root: str, build: Path = BUILD, *, without_pyc: bool = False) -> None:
        self.build = build
        self.inside = Path("/tmp") / f"athm-{uuid.uuid4().hex}"
        self.outside = Path(python313_root) / self.inside.relative_to("/")
        self.ignore = shutil.ignore_patterns("__pycache__") if without_pyc else None

    def __enter__(self) -> tuple[Path, Path]:
        try:
            shutil.copytree(self.build / "WebhookFunction", self.outside / "var" / "task", ignore=self.ignore)
            shutil.copytree(self.build / "DependenciesLayer" / "python", self.outside / "opt" / "python",
                            ignore=self.ignore)  # fmt: skip
            (self.outside / "work").mkdir()
        except BaseException:
            shutil.rmtree(self.outside, ignore_errors=True)
            raise
        return self.inside / "var" / "task", self.inside / "opt" / "python"

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.outside, ignore_errors=True)


def in_root(
    python313_root: str, *command: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess:
    """``command`` run inside ``python313_root`` (chroot, as root), from its /."""
    return subprocess.run(
        [CHROOT, python313_root, *command],
        input=stdin,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
