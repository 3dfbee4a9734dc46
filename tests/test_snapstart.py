"""Cold-start set-up without garbage collection, and SnapStart's hooks: each Lambda entry point collects
again (with its set-up frozen) once it is set up; a snapshot keeps no database connection; a restore reseeds
random numbers and reads the secrets and makes the AWS clients anew. The runtime's ``snapshot_restore_py``
exists only in Lambda: a stand-in module takes its place here."""

from __future__ import annotations

import random
import sys
import types

import pytest
from django.db import connection

from handler import aws, publisher, secrets_manager, snapstart, webhook_secrets
from tests.test_cold_start import python


@pytest.mark.parametrize("module", ["handler.app", "handler.relay", "handler.reconcile", "handler.migrate"])
def test_each_lambda_entry_point_sets_up_without_collecting_then_collects_again(child_env, module):
    code = (
        "import gc, handler.boot; print(gc.isenabled()); "
        f"import {module}; print(gc.isenabled(), gc.get_freeze_count() > 0)"
    )
    result = python(code, {**child_env, **IN_LAMBDA})
    assert result.returncode == 0, result.stderr
    printed = " ".join(line for line in result.stdout.splitlines() if not line.startswith("{"))  # not logs
    assert printed.split()[-3:] == ["False", "True", "True"], result.stdout


# What Lambda's runtime sets in the process it starts (the runtime API's address, here made up).
IN_LAMBDA = {"AWS_LAMBDA_FUNCTION_NAME": "athm-test", "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001"}


@pytest.mark.parametrize(
    "env", [{}, {"AWS_LAMBDA_FUNCTION_NAME": "athm-test"}], ids=["a shell", "a shell mimicking Lambda"]
)
def test_outside_lambda_s_runtime_nothing_changes_for_the_collector(child_env, env):
    result = python("import gc, handler.boot; print(gc.isenabled())", {**child_env, **env})
    assert result.returncode == 0 and result.stdout.split()[-1] == "True", result.stderr


def test_an_athm_command_run_where_lambda_s_runtime_is_collects_as_usual(child_env):
    code = "import sys; sys.argv = ['athm', 'shell', '-c', 'import gc; print(gc.isenabled())']; "
    code += "from handler.cli import main; main()"
    result = python(code, {**child_env, **IN_LAMBDA})
    assert result.returncode == 0 and result.stdout.split()[-1] == "True", result.stderr


@pytest.fixture
def runtime(monkeypatch):
    """A stand-in for Lambda's ``snapshot_restore_py``: it keeps the hooks registered."""
    hooks = {"before": [], "after": []}
    stand_in = types.ModuleType("snapshot_restore_py")
    stand_in.register_before_snapshot = hooks["before"].append
    stand_in.register_after_restore = hooks["after"].append
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", stand_in)
    return hooks


def test_without_the_runtime_module_nothing_is_registered():
    assert "snapshot_restore_py" not in sys.modules
    assert snapstart.register() is False


@pytest.mark.django_db(transaction=True)
def test_a_snapshot_keeps_no_connection_and_a_restore_redoes_what_it_must(runtime, settings, monkeypatch):
    assert snapstart.register() is True
    [before], [after] = runtime["before"], runtime["after"]

    connection.ensure_connection()
    before()
    assert connection.connection is None

    reads = []
    values = {"arn:private": " sk_rotated ", "arn:webhook": "w" * 40}

    def read(arn, *, fresh=False):
        reads.append(arn)
        return values[arn]

    monkeypatch.setattr(secrets_manager, "read", read)
    settings.ATHM_PRIVATE_TOKEN_SECRET_ARN = "arn:private"
    settings.ATHM_PRIVATE_TOKEN = "sk_from_the_snapshot"
    settings.ATHM_WEBHOOK_SECRET_ARN = "arn:webhook"
    settings.ATHM_SNS_TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:athm-events"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    snapshot_client = publisher.sns_client()
    random.seed(7)
    drawn_in_snapshot = random.random()
    random.seed(7)
    connection.ensure_connection()

    after()

    assert random.random() != drawn_in_snapshot
    assert connection.connection is None
    assert settings.ATHM_PRIVATE_TOKEN == "sk_rotated"
    assert reads == ["arn:private", "arn:webhook"]
    assert webhook_secrets.secrets() == ("w" * 40,)
    assert publisher.sns_client() is not snapshot_client
    webhook_secrets.reset()
    publisher.reset()
    aws.reset()


@pytest.mark.django_db(transaction=True)
def test_a_restore_while_secrets_manager_fails_keeps_the_snapshot_s_secrets(runtime, settings, monkeypatch):
    snapstart.register()
    [after] = runtime["after"]
    settings.ATHM_PRIVATE_TOKEN_SECRET_ARN = "arn:private"
    settings.ATHM_PRIVATE_TOKEN = "sk_from_the_snapshot"
    settings.ATHM_WEBHOOK_SECRET_ARN = "arn:webhook"
    settings.ATHM_SNS_TOPIC_ARN = ""
    monkeypatch.setattr(secrets_manager, "read", lambda arn, *, fresh=False: "w" * 40)
    webhook_secrets.reset()
    assert webhook_secrets.secrets() == ("w" * 40,)  # read as the snapshot was made

    def unreachable(arn, *, fresh=False):
        raise TimeoutError("Secrets Manager is slow")

    monkeypatch.setattr(secrets_manager, "read", unreachable)
    after()  # does not raise: a restored container must start

    assert settings.ATHM_PRIVATE_TOKEN == "sk_from_the_snapshot"
    assert webhook_secrets.secrets() == ("w" * 40,)
    webhook_secrets.reset()
