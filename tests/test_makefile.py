"""The Makefile's first hour: ``make serve`` installs what serving needs and no more (the ``serve`` extra,
not the test and build tools), installs nothing over a full install, and serves with the admin unless
told ATHM_ADMIN=0. Run against a virtualenv of its own (VENV=...), so that the project's is never touched."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not shutil.which("make"), reason="make is not installed")


def make(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def pip_installs(dry_run: str) -> list[str]:
    return [line for line in dry_run.splitlines() if "pip install" in line and "--upgrade pip" not in line]


def test_make_serve_on_a_fresh_machine_installs_the_serve_extra_and_says_so_first(tmp_path):
    dry_run = make("-n", "serve", f"VENV={tmp_path / 'venv'}")
    assert pip_installs(dry_run) == [f"{tmp_path / 'venv'}/bin/python -m pip install --quiet -e '.[serve]'"]
    assert "[dev" not in dry_run and ",dev" not in dry_run
    lines = dry_run.replace("\\\n", "").splitlines()  # continued lines joined
    assert lines[0].startswith("echo ") and "Installing" in lines[0] and "packages" in lines[0]
    # Serving with the admin, unless ATHM_ADMIN says otherwise: the migrations as the server.
    for command in ("athm migrate", "athm serve"):
        line = next(line for line in lines if command in line)
        assert line.startswith("ATHM_ADMIN=${ATHM_ADMIN:-1} "), line


def test_the_test_tools_are_installed_by_make_lint_not_by_make_serve(tmp_path):
    installs = pip_installs(make("-n", "lint", f"VENV={tmp_path / 'venv'}"))
    assert len(installs) == 1
    assert "'.[dev,serve,postgres,mysql]' -c requirements-lambda-al2023.txt" in installs[0]


def test_make_serve_installs_nothing_over_a_full_install(tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed").touch()  # newer than pyproject.toml: the full install is up to date
    assert pip_installs(make("-n", "serve", f"VENV={venv}")) == []


def fake_venv(tmp_path: Path) -> Path:
    """A virtualenv whose ``athm`` says what it was run with, and whose serving install is up to date."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    athm = venv / "bin" / "athm"
    athm.write_text('#!/bin/sh\necho "athm $1 ATHM_ADMIN=$ATHM_ADMIN"\n')
    athm.chmod(0o755)
    (venv / ".serving").touch()
    return venv


@pytest.mark.parametrize(
    ("make_args", "env", "admin"),
    [([], {}, "1"), (["ATHM_ADMIN=0"], {}, "0"), ([], {"ATHM_ADMIN": "0"}, "0")],
    ids=["default", "make-variable", "environment"],
)
def test_make_serve_runs_migrate_and_serve_with_the_admin_unless_told_otherwise(
    tmp_path, make_args, env, admin
):
    venv = fake_venv(tmp_path)
    ran = [
        line
        for line in make("serve", f"VENV={venv}", *make_args, env=env).splitlines()
        if line[:5] == "athm "
    ]
    assert ran == [f"athm migrate ATHM_ADMIN={admin}", f"athm serve ATHM_ADMIN={admin}"]
