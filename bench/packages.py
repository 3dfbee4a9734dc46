"""The benchmark's cold start of the built packages: the python3.13 package (``make build``, what ``sam
deploy`` uploads by default) beside the python3.11 one (``make build-test-package``).

Each is a new process from its start to its first answered webhook, on a SQLite database its package
migrated beforehand, running the same script (``tests.built_function.FIRST_ANSWER``) with only the
function's code and its layer on the path, from their .pyc files, ``--cold-runs`` times each, interleaved.
The python3.11 package runs on this machine's Python 3.11, as tests/test_build.py runs it; the python3.13
one inside ``PYTHON313_ROOT`` (a Debian trixie root, with chroot, as root) laid out as /var/task and
/opt/python, as tests/test_build_python313.py runs it, with that root's own Python 3.13 and libraries
(SQLite, glibc). So the ratio compares the packages as Lambda would load them, each with its runtime's
Python, not the two interpreters on equal footing. When something is missing (a package not built, no
such root, not root, a benchmark not on Python 3.11), the section is skipped and says what is missing.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench import corpus
from tests.built_function import (
    BUILD,
    FIRST_ANSWER,
    ROOT,
    TEST_BUILD,
    WEBHOOK,
    InsideRoot,
    bootstrap,
    built_runtime,
    environment,
    first_answer,
    in_root,
    on_host,
    why_not_in_root,
)

SECTION = "cold start of the built packages"
PY311, PY313 = "python3.11", "python3.13"
# The interpreter and the libraries a package meets where it runs.
_WHERE = (
    "import json, platform, sqlite3\n"
    "print('RESULT', json.dumps({'python': platform.python_version(), 'sqlite': sqlite3.sqlite_version,"
    " 'libc': ' '.join(platform.libc_ver())}))\n"
)

# Runs code in a package (the code, the webhook body on its standard input).
Start = Callable[[str, str], subprocess.CompletedProcess]


def missing(python313_root: str) -> str:
    """What keeps the two packages' cold starts from being measured here; empty when nothing does."""
    reasons = []
    if sys.version_info[:2] != (3, 11):
        reasons.append(
            f"the benchmark runs on Python {sys.version.split()[0]}: the python3.11 package runs on it,"
            " and its .pyc files need 3.11"
        )
    runtime = built_runtime(TEST_BUILD)
    if runtime is None:
        reasons.append(f"no {TEST_BUILD.relative_to(ROOT)}: run `make build-test-package`")
    elif runtime != PY311:
        reasons.append(f"{TEST_BUILD.relative_to(ROOT)} was built for {runtime}, not {PY311}")
    elif not _precompiled(TEST_BUILD, "311"):
        reasons.append(f"{TEST_BUILD.relative_to(ROOT)} holds no Python 3.11 .pyc files")
    why = why_not_in_root(python313_root, BUILD)
    if why:
        reasons.append(why)
    elif not _precompiled(BUILD, "313"):
        reasons.append(
            f"{BUILD.relative_to(ROOT)} holds no Python 3.13 .pyc files (built with no python3.13 to compile"
            " them: make build PYTHON313_ROOT=...)"
        )
    return "; ".join(reasons)


def _precompiled(build: Path, tag: str) -> bool:
    return (build / "WebhookFunction" / "handler" / "__pycache__" / f"app.cpython-{tag}.pyc").exists()


def cold_starts(runs: int, scratch: Path, skipped: dict[str, str]) -> dict[str, Any] | None:
    """Both packages' cold starts (medians), or None with the reason in ``skipped``."""
    python313_root = os.environ.get("PYTHON313_ROOT", "")
    why = missing(python313_root)
    if why:
        skipped[SECTION] = why
        _say(f"skipping the {SECTION}: {why}")
        return None
    on_this_machine = scratch / "package-python3.11"
    (on_this_machine / "work").mkdir(parents=True)
    host_env = {"PATH": "/usr/bin:/bin", **environment(on_this_machine)}
    with InsideRoot(python313_root, BUILD) as (task, layer):
        starts: dict[str, Start] = {
            PY311: lambda code, body: on_host(code, env=host_env, cwd=on_this_machine, stdin=body),
            PY313: lambda code, body: in_root(
                python313_root, "python3.13", "-I", "-S", "-c", bootstrap(task, layer) + code,
                env=environment(task.parent.parent), stdin=body,
            ),
        }  # fmt: skip
        # Where each package's own files are, as its process sees them: what it should never compile.
        package = {PY311: str(TEST_BUILD), PY313: str(task.parent.parent)}
        bodies = corpus.cold_start_bodies(runs + 1)
        where = {runtime: _where(runtime, start) for runtime, start in starts.items()}
        for runtime, start in starts.items():
            _say(f"{SECTION}: {runtime}, migrations and a first webhook")
            _prepare(runtime, start, bodies[0])
        times: dict[str, list[dict[str, Any]]] = {PY311: [], PY313: []}
        for run in range(runs):
            _say(f"{SECTION} {run + 1}/{runs}")
            for runtime in (PY311, PY313) if run % 2 == 0 else (PY313, PY311):
                times[runtime].append(_cold(runtime, starts[runtime], bodies[run + 1], package[runtime]))
                times[runtime][-1]["bare"] = _bare(starts[runtime])
    result: dict[str, Any] = {"runs": runs, "python313_root": python313_root}
    for runtime, samples in times.items():
        result[runtime] = {
            **where[runtime],
            "to_first_answer_ms": statistics.median(t["answered"] for t in samples),
            "to_first_answer_range_ms": _range(t["answered"] for t in samples),
            "init_ms": statistics.median(t["set_up"] for t in samples),
            "first_invocation_ms": statistics.median(t["answered"] - t["set_up"] for t in samples),
            # The same interpreter started the same way, running nothing: to the end of its process.
            "bare_interpreter_ms": statistics.median(t["bare"] for t in samples),
            # Modules compiled from source on the way (most of one run): none of the package's is expected.
            "compiled_package_modules": max(t["compiled_package"] for t in samples),
            "compiled_other_modules": max(t["compiled_other"] for t in samples),
        }
    result["ratio_313_to_311"] = result[PY313]["to_first_answer_ms"] / result[PY311]["to_first_answer_ms"]
    return result


def _range(values: Iterable[float]) -> list[float]:
    ordered = sorted(values)
    return [ordered[0], ordered[-1]]


def _where(runtime: str, start: Start) -> dict[str, str]:
    finished = start(_WHERE, "")
    if finished.returncode != 0:
        raise SystemExit(f"the {runtime} package's Python did not start:\n{finished.stderr[-4000:]}")
    [line] = [line for line in finished.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line[7:])


def _prepare(runtime: str, start: Start, body: str) -> None:
    """The package migrates its database, then answers a completion and its redelivery (built_function)."""
    finished = start(WEBHOOK, body)
    results = [json.loads(line[7:]) for line in finished.stdout.splitlines() if line.startswith("RESULT ")]
    outcomes = [(r["status"], r["body"]["outcome"]) for r in results[1:3]] if len(results) >= 3 else []
    expected = [(200, "applied"), (200, "duplicate")]
    if finished.returncode != 0 or results[:1] != ["migrated"] or outcomes != expected:
        raise SystemExit(f"the {runtime} package failed to migrate and answer:\n{finished.stderr[-4000:]}")


def _cold(runtime: str, start: Start, body: str, package: str) -> dict[str, Any]:
    started = time.monotonic()
    finished = start(FIRST_ANSWER, body)
    if finished.returncode != 0:
        raise SystemExit(f"the {runtime} package's cold start failed:\n{finished.stderr[-4000:]}")
    answer = first_answer(finished.stdout)
    if answer["status"] != 200:
        raise SystemExit(f"the {runtime} package's cold start answered {answer['status']}")
    ours = [path for path in answer["compiled"] if path.startswith(package)]
    return {
        "set_up": (answer["set_up"] - started) * 1000,
        "answered": (answer["answered"] - started) * 1000,
        "compiled_package": len(ours),
        "compiled_other": len(answer["compiled"]) - len(ours),
    }


def _bare(start: Start) -> float:
    started = time.monotonic()
    finished = start("", "")
    if finished.returncode != 0:
        raise SystemExit(f"a bare interpreter failed:\n{finished.stderr[-4000:]}")
    return (time.monotonic() - started) * 1000


def report(results: dict[str, Any]) -> list[str]:
    """The section's lines of the Markdown report."""
    packages = results.get("built_packages")
    if not packages:
        why = results["skipped"].get(SECTION, "not run")
        return [f"\n## Cold start of the built packages\n\nNot measured: {why}."]
    theirs = results["cold_start"]["theirs"]["to_first_answer_ms"]
    lines = [
        "\n## Cold start of the built packages: a new process to its first answered webhook "
        f"(SQLite, medians of {packages['runs']})\n",
        "| package | runs on | Python | SQLite | to first answer, ms | init, ms | first invocation, ms "
        "| / python3.11 | / django-athm | bare interpreter, ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for runtime, runs_on in ((PY311, "this machine"), (PY313, f"chroot {packages['python313_root']}")):
        figures = packages[runtime]
        lines.append(
            f"| {runtime} | {runs_on} | {figures['python']} | {figures['sqlite']} | "
            f"{figures['to_first_answer_ms']:.0f} | {figures['init_ms']:.0f} | "
            f"{figures['first_invocation_ms']:.0f} | "
            f"{figures['to_first_answer_ms'] / packages[PY311]['to_first_answer_ms']:.2f} | "
            f"{figures['to_first_answer_ms'] / theirs:.2f} | {figures['bare_interpreter_ms']:.0f} |"
        )
    lines.append(f"| django-athm, plain (above) | this machine | - | - | {theirs:.0f} | | | | 1.00 | |")
    spread = "; ".join(
        f"{runtime} {low:.0f} to {high:.0f} ms"
        for runtime in (PY311, PY313)
        for low, high in [packages[runtime]["to_first_answer_range_ms"]]
    )
    lines.append(
        f"\npython3.13/python3.11: {packages['ratio_313_to_311']:.2f} (to first answer, fastest and slowest"
        f" runs: {spread}). Each package runs the same script with"
        " only its function's code and its layer on the path, from its .pyc files, on a database it migrated"
        " before; the two are interleaved. The python3.13 package runs inside the root with chroot, with that"
        " root's own (newer) Python and libraries, and the python3.11 one on this machine's Python 3.11: this"
        " compares the packages as Lambda would load them, not the interpreters on equal footing. The"
        " python3.13 figure includes starting chroot. The last column is the same interpreter, started the"
        " same way, running nothing (to its exit): what each figure owes to its interpreter alone."
        " django-athm's figure is its plain cold start from this run's section above (its own virtual"
        " environment, not a package), for scale."
    )
    for runtime in (PY311, PY313):
        compiled = packages[runtime]["compiled_package_modules"]
        if compiled:
            lines.append(
                f"\n**{runtime}: {compiled} of the package's modules were compiled from source** (its .pyc"
                " files were not used): its figure is not what Lambda would see."
            )
    return lines


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)
