"""The listener secrets: read from Secrets Manager (moto) and read again every five minutes, so a rotation
reaches a warm container; the last good value through an outage; at least 32 characters in Lambda; compared
in constant time with each; and ``athm new_secret``."""

import hashlib
import hmac
import io
import re
import subprocess
import sys

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from django.core.management import call_command
from moto import mock_aws

from handler import secrets_manager, webhook_secrets
from handler.management.commands.new_secret import Command as NewSecret
from tests.conftest import ROOT, sample

NEW = "new-secret-R2kH7vQpX4mZ8wLcN1bT6yFs0aJdEgUo"
OLD = "old-secret-9fQ2xW7pL4kZ1mN8bV5cT3yH6sJ0dRgE"
SHORT = "short-but-sweet"  # 15 characters


@pytest.fixture(autouse=True)
def fresh_reader():
    """Nothing read, cached or warned about before the test, nor left behind for the next."""
    webhook_secrets.reset()
    yield
    webhook_secrets.reset()


class Clock:
    """Stands in for the module's monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(webhook_secrets, "_clock", fake)
    return fake


@pytest.fixture
def secretsmanager(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


class Deployed:
    """A webhook secret in Secrets Manager, named by ATHM_WEBHOOK_SECRET_ARN, and the reads made of it."""

    def __init__(self, client, settings, value: str) -> None:
        self.client = client
        self.arn = client.create_secret(Name="athm-webhook-secret", SecretString=value)["ARN"]
        settings.ATHM_WEBHOOK_SECRET_ARN = self.arn
        self.reads = 0
        self._failure: Exception | None = None
        provider = secrets_manager.provider("us-east-1")
        original = provider.client.get_secret_value

        def get_secret_value(**kwargs):
            self.reads += 1
            if self._failure:
                raise self._failure
            return original(**kwargs)

        provider.client.get_secret_value = get_secret_value

    def rotate(self, value: str) -> None:
        self.client.put_secret_value(SecretId=self.arn, SecretString=value)

    def fail(self, failure: Exception | None) -> None:
        """Make every read fail with ``failure`` (None: work again)."""
        self._failure = failure


@pytest.fixture
def deploy(secretsmanager, settings):
    return lambda value: Deployed(secretsmanager, settings, value)


def logged(caplog) -> str:
    """Everything logged, messages and extra fields alike."""
    return "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)


# --- reading from Secrets Manager ----------------------------------------------------------------------


def test_the_secret_is_read_once_then_again_after_five_minutes(deploy, clock):
    deployed = deploy(OLD)
    assert webhook_secrets.secrets() == (OLD,)
    deployed.rotate(f"{NEW},{OLD}")
    clock.advance(299)
    assert webhook_secrets.secrets() == (OLD,)  # still the cached read
    assert deployed.reads == 1

    clock.advance(1)
    assert webhook_secrets.secrets() == (NEW, OLD)
    assert webhook_secrets.matches(NEW) and webhook_secrets.matches(OLD)
    assert deployed.reads == 2

    deployed.rotate(NEW)
    clock.advance(300)
    assert webhook_secrets.secrets() == (NEW,)
    assert webhook_secrets.matches(NEW) and not webhook_secrets.matches(OLD)
    assert deployed.reads == 3


@pytest.mark.parametrize(
    "failure",
    [
        EndpointConnectionError(endpoint_url="https://secretsmanager.us-east-1.amazonaws.com/"),
        ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}, "GetSecretValue"
        ),
    ],
    ids=["unreachable", "refused"],
)
def test_a_failed_refresh_keeps_the_last_good_value_and_logs_a_warning_without_it(
    deploy, clock, caplog, failure
):
    deployed = deploy(OLD)
    assert webhook_secrets.secrets() == (OLD,)
    deployed.fail(failure)
    clock.advance(300)
    assert webhook_secrets.secrets() == (OLD,)
    assert webhook_secrets.matches(OLD)
    assert deployed.reads == 2
    [warning] = [r for r in caplog.records if "could not read the webhook secret" in r.getMessage()]
    assert warning.levelname == "WARNING" and warning.error_type == type(failure).__name__
    assert OLD not in logged(caplog)

    # During the outage Secrets Manager is asked again once a minute, not on every webhook.
    clock.advance(59)
    assert webhook_secrets.secrets() == (OLD,) and deployed.reads == 2
    clock.advance(1)
    assert webhook_secrets.secrets() == (OLD,) and deployed.reads == 3

    # Back: the next try reads the value rotated in meanwhile.
    deployed.fail(None)
    deployed.rotate(f"{NEW},{OLD}")
    clock.advance(60)
    assert webhook_secrets.secrets() == (NEW, OLD)


def test_a_short_secret_rotated_in_is_ignored_in_lambda_and_the_others_kept(deploy, clock, settings, caplog):
    settings.IN_LAMBDA = True
    deployed = deploy(OLD)
    assert webhook_secrets.secrets() == (OLD,)

    deployed.rotate(f"{SHORT},{OLD}")
    for _ in range(3):  # three refreshes of the same value: one error
        clock.advance(300)
        assert webhook_secrets.secrets() == (OLD,)
    assert not webhook_secrets.matches(SHORT) and webhook_secrets.matches(OLD)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == [
        "ignoring webhook secrets shorter than 32 characters; the others are still accepted"
    ]

    deployed.rotate(SHORT)  # nothing usable left: the last good value stays
    clock.advance(300)
    assert webhook_secrets.secrets() == (OLD,)
    assert any("holds no usable secret" in r.getMessage() for r in caplog.records)
    assert SHORT not in logged(caplog) and OLD not in logged(caplog)


def test_the_cold_start_read_and_the_first_webhook_share_one_read(deploy, clock):
    deployed = deploy(f"{NEW},{OLD}")
    # handler.app's check at the cold start, then the first webhook.
    webhook_secrets.check_at_start()
    assert webhook_secrets.matches(NEW)
    assert deployed.reads == 1


# --- without an ARN: the settings' secrets -------------------------------------------------------------


def test_short_secrets_work_outside_lambda_with_one_warning(settings, caplog):
    settings.ATHM_WEBHOOK_SECRET = "local-dev-secret"
    settings.IN_LAMBDA = False
    assert webhook_secrets.matches("local-dev-secret")
    assert webhook_secrets.matches("local-dev-secret")
    warnings = [r for r in caplog.records if "shorter than 32 characters" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    assert "local-dev-secret" not in logged(caplog)


def test_in_lambda_a_short_setting_is_never_accepted(settings):
    # The cold start refuses it (below); were it to get this far, it would still not open the door.
    settings.ATHM_WEBHOOK_SECRET = f"{SHORT},{OLD}"
    settings.IN_LAMBDA = True
    assert not webhook_secrets.matches(SHORT)
    assert webhook_secrets.matches(OLD)


def test_matches_each_secret_and_nothing_near_one(settings):
    settings.ATHM_WEBHOOK_SECRET = f"{NEW}, {OLD}"
    assert webhook_secrets.matches(NEW) and webhook_secrets.matches(OLD)
    near = [
        "",
        NEW[:-1],
        NEW[1:],
        NEW + "x",
        "x" + NEW,
        NEW + "/",
        NEW.upper(),
        f"{NEW},{OLD}",
        f" {NEW}",
        OLD[:32],
        "ñ" + NEW[1:],
        "\udc80",  # a lone surrogate does not crash the comparison
    ]
    for candidate in near:
        assert not webhook_secrets.matches(candidate), candidate


def test_every_secret_is_compared_in_full_whichever_matches(settings, monkeypatch):
    settings.ATHM_WEBHOOK_SECRET = ",".join((NEW, OLD, "third-secret-" + "z" * 30))
    compared = []
    real_compare_digest = hmac.compare_digest

    def compare_digest(a, b):
        compared.append((len(a), len(b)))
        return real_compare_digest(a, b)

    monkeypatch.setattr(webhook_secrets.hmac, "compare_digest", compare_digest)
    for candidate in (NEW, OLD, "wrong", ""):
        compared.clear()
        webhook_secrets.matches(candidate)
        # Three comparisons every time, of digests of one length: no early exit, no length to time.
        assert compared == [(hashlib.sha256().digest_size,) * 2] * 3


# --- the cold start --------------------------------------------------------------------------------------


def cold_start(env: dict[str, str], code: str = "import handler.app") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_in_lambda_a_short_secret_refuses_the_cold_start_without_printing_it(child_env):
    env = {**child_env, "AWS_LAMBDA_FUNCTION_NAME": "athm-webhook", "ATHM_WEBHOOK_SECRET": f"{OLD},{SHORT}"}
    result = cold_start(env)
    assert result.returncode != 0
    assert (
        "ATHM_WEBHOOK_SECRET holds a secret shorter than 32 characters (number 2 of 2): refusing to start"
        in result.stderr
    )
    assert SHORT not in result.stderr + result.stdout and OLD not in result.stderr + result.stdout


def test_in_lambda_a_short_secret_in_secrets_manager_refuses_the_cold_start(child_env, moto_server):
    client = boto3.client(
        "secretsmanager", region_name="us-east-1", endpoint_url=moto_server["AWS_ENDPOINT_URL"]
    )
    arn = client.create_secret(Name=f"athm-short-{id(client)}", SecretString=SHORT)["ARN"]
    env = {**child_env, **moto_server, "AWS_LAMBDA_FUNCTION_NAME": "athm-webhook"}
    env.pop("ATHM_WEBHOOK_SECRET")
    result = cold_start({**env, "ATHM_WEBHOOK_SECRET_ARN": arn})
    assert result.returncode != 0
    assert "named by ATHM_WEBHOOK_SECRET_ARN holds a secret shorter than 32 characters" in result.stderr
    assert SHORT not in result.stderr + result.stdout

    client.put_secret_value(SecretId=arn, SecretString=f"{NEW},{OLD}")
    # Put right, the same function starts and takes the listed secrets.
    started = cold_start(
        {**env, "ATHM_WEBHOOK_SECRET_ARN": arn},
        f"import handler.app; from handler.webhook_secrets import matches; print(matches({OLD!r}))",
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip().splitlines()[-1] == "True"


def test_outside_lambda_a_short_secret_starts_with_a_warning(child_env):
    env = {**child_env, "ATHM_WEBHOOK_SECRET": "local-dev-secret"}
    code = (
        "import handler.app; from handler.webhook_secrets import matches; print(matches('local-dev-secret'))"
    )
    result = cold_start(env, code)
    assert result.returncode == 0, result.stderr
    output = result.stdout.strip().splitlines()
    assert output[-1] == "True"
    assert sum("shorter than 32 characters" in line for line in output) == 1


# --- through the Lambda handler ------------------------------------------------------------------------


def test_a_rotation_reaches_a_warm_container_without_a_redeploy(lambda_handler, deploy, clock):
    deployed = deploy(OLD)
    assert lambda_handler.post(sample("simulated"), secret=OLD).status == 200
    assert lambda_handler.post(sample("simulated"), secret=NEW).status == 404

    # 1. The new secret goes in beside the old one; within five minutes both URLs work.
    deployed.rotate(f"{NEW},{OLD}")
    clock.advance(300)
    assert lambda_handler.post(sample("simulated"), secret=NEW).status == 200
    assert lambda_handler.post(sample("simulated"), secret=OLD).status == 200

    # 2. The old one is retired: its URL is a 404 within five minutes.
    deployed.rotate(NEW)
    clock.advance(300)
    assert lambda_handler.post(sample("simulated"), secret=NEW).status == 200
    assert lambda_handler.post(sample("simulated"), secret=OLD).status == 404


# --- athm new_secret -------------------------------------------------------------------------------------


def new_secret() -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("new_secret", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_new_secret_prints_a_fresh_url_safe_secret_alone_on_stdout(lambda_handler, settings):
    first, advice = new_secret()
    second, _ = new_secret()
    assert first.endswith("\n") and first.count("\n") == 1
    secret = first.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", secret), secret
    assert second.strip() != secret
    assert "NEW,OLD" in advice and "docs/deploy.md" in advice

    # Good enough for a Lambda function, and works in the listener URL as printed.
    settings.IN_LAMBDA = True
    settings.ATHM_WEBHOOK_SECRET = secret
    assert lambda_handler.post(sample("simulated"), secret=secret).status == 200


def test_new_secret_help_gives_the_rotation_steps():
    help_text = NewSecret().create_parser("athm", "new_secret").format_help()
    assert "NEW,OLD" in " ".join(help_text.split()) and "docs/deploy.md" in help_text
