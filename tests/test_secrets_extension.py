"""Secrets read through the AWS Parameters and Secrets Lambda Extension when
``PARAMETERS_SECRETS_EXTENSION_HTTP_PORT`` says it is there: a stand-in for the extension on 127.0.0.1
answers like it (GetSecretValue's JSON, the session token required) and counts what it is asked. Through
it: the plain secrets and the database secret, cached as before, read afresh on ``fresh=True`` (a rotation),
errors that name the secret but never its value, and a cold start that never imports boto3. Without the
variable, boto3 and Powertools as before (moto)."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from django.core.exceptions import ImproperlyConfigured
from moto import mock_aws

from handler import secrets_manager, webhook_secrets
from handler.settings import database_settings
from tests.conftest import ROOT
from tests.test_settings import connection_params_after_rotation

TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE-session-token"
WEBHOOK_SECRET = "webhook-secret-R2kH7vQpX4mZ8wLcN1bT6yFs0aJdEgUo"
PASSWORD = "p@ss/word:1-never-printed"
DROP = -1  # a status for the stand-in: close the connection without answering


class Extension(ThreadingHTTPServer):
    """Stands in for the extension: ``GET /secretsmanager/get?secretId=...`` with the session token in
    ``X-Aws-Parameters-Secrets-Token`` answers GetSecretValue's JSON; without the right token 401, for a
    secret it does not know 400. ``fail_with`` answers that status instead (with the secret's value in the
    body, which must never reach an error; ``DROP``: no answer), ``statuses`` the next few, and ``delay``
    waits before answering; ``raw`` is written as the whole answer.

    It has what ``tests.test_settings`` asks of a Secrets Manager client (``create_secret``,
    ``put_secret_value``), so the rotation proof there runs through it too."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Answer)
        self.port = self.server_address[1]
        self.values: dict[str, dict[str, str]] = {}
        self.requests: list[dict[str, str]] = []
        self.fail_with: int | None = None
        self.statuses: list[int] = []
        self.delay = 0.0
        self.raw: bytes | None = None
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def create_secret(self, Name: str, SecretString: str | None = None, SecretBinary: bytes | None = None):
        arn = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{Name}-AbCdEf"
        answer = {"ARN": arn, "Name": Name, "VersionId": str(uuid.uuid4()), "VersionStages": ["AWSCURRENT"]}
        if SecretBinary is not None:
            answer["SecretBinary"] = base64.b64encode(SecretBinary).decode()
        else:
            answer["SecretString"] = SecretString
        self.values[arn] = answer
        return {"ARN": arn, "Name": Name}

    def put_secret_value(self, SecretId: str, SecretString: str):
        self.values[SecretId].update(SecretString=SecretString, VersionId=str(uuid.uuid4()))

    def handle_error(self, request, client_address) -> None:
        pass  # a client that gave up on a slow answer: nothing to print

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Answer(BaseHTTPRequestHandler):
    server: Extension

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        secret_ids = parse_qs(url.query).get("secretId", [])
        self.server.requests.append(
            {
                "path": url.path,
                "secret_id": ",".join(secret_ids),
                "token": self.headers.get("X-Aws-Parameters-Secrets-Token", ""),
            }
        )
        if self.server.delay:
            time.sleep(self.server.delay)
        found = self.server.values.get(secret_ids[0]) if len(secret_ids) == 1 else None
        if self.server.raw is not None:
            self.wfile.write(self.server.raw)
            self.close_connection = True
            return
        status = self.server.statuses.pop(0) if self.server.statuses else self.server.fail_with
        if status == DROP:
            self.close_connection = True  # no answer at all
        elif status:
            # What a careless client would put in its error: the value itself.
            self._send(status, f"failed, and here is the value: {json.dumps(found)}")
        elif self.headers.get("X-Aws-Parameters-Secrets-Token") != TOKEN:
            self._send(401, "missing or wrong X-Aws-Parameters-Secrets-Token")
        elif url.path != "/secretsmanager/get" or found is None:
            self._send(400, "ResourceNotFoundException: Secrets Manager can't find the specified secret.")
        else:
            self._send(200, json.dumps(found))

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture(autouse=True)
def nothing_read():
    secrets_manager.reset()
    webhook_secrets.reset()
    yield
    secrets_manager.reset()
    webhook_secrets.reset()


@pytest.fixture
def extension(monkeypatch):
    """The stand-in, and this process pointed at it as Lambda would be with the layer attached."""
    server = Extension()
    monkeypatch.setenv("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", str(server.port))
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    yield server
    server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(secrets_manager, "_clock", fake)
    monkeypatch.setattr(webhook_secrets, "_clock", fake)
    return fake


def everything_about(exc: BaseException) -> str:
    """All a log or a traceback could show of an exception, its chain included."""
    return "".join(traceback.format_exception(exc)) + repr(exc.__context__) + repr(exc.__cause__)


# --- through the extension ------------------------------------------------------------------------------


def test_a_secret_is_read_through_the_extension_with_the_session_token(extension):
    arn = extension.create_secret(Name="athm/private-token+1", SecretString=" sk_private_0123 ")["ARN"]
    assert secrets_manager.read(arn) == " sk_private_0123 "
    # One request, as documented: the ARN as secretId (quoted: '/', '+' and ':' arrive as sent), the token.
    assert extension.requests == [{"path": "/secretsmanager/get", "secret_id": arn, "token": TOKEN}]
    assert secrets_manager.provider.cache_info().currsize == 0  # no boto3 client was made


def test_the_database_secret_is_read_through_the_extension(extension):
    credentials = {"username": "athm", "password": PASSWORD}
    arn = extension.create_secret(Name="rds!db-1234", SecretString=json.dumps(credentials))["ARN"]
    assert secrets_manager.database_secret(arn) == credentials
    config = database_settings({"DB_SECRET_ARN": arn, "DATABASE_URL": "postgres://shop.internal:5432/shop"})
    assert (config["ENGINE"], config["USER"], config["PASSWORD"]) == (
        "handler.rds.postgresql",
        "athm",
        PASSWORD,
    )
    assert len(extension.requests) == 1  # the settings' read was the cached one
    assert {request["token"] for request in extension.requests} == {TOKEN}


def test_a_binary_secret_is_read_as_text(extension):
    arn = extension.create_secret(Name="binary", SecretBinary="sk_binary_ñ".encode())["ARN"]
    assert secrets_manager.read(arn) == "sk_binary_ñ"


def test_a_secret_that_is_not_a_database_secret_is_refused(extension):
    for name, value in (("not-json", "just a string"), ("no-password", json.dumps({"secret": "abc"}))):
        arn = extension.create_secret(Name=name, SecretString=value)["ARN"]
        with pytest.raises(ImproperlyConfigured, match="is not a database secret") as refused:
            secrets_manager.database_secret(arn)
        assert value not in everything_about(refused.value)


def test_a_read_is_trusted_for_max_age_and_fresh_reads_again_now(extension, clock):
    arn = extension.create_secret(Name="athm-webhook", SecretString="first")["ARN"]
    assert secrets_manager.read(arn) == "first"
    extension.put_secret_value(SecretId=arn, SecretString="second")

    clock.now += secrets_manager.MAX_AGE_SECONDS - 1
    assert secrets_manager.read(arn) == "first"  # cached: no request
    assert len(extension.requests) == 1

    assert secrets_manager.read(arn, fresh=True) == "second"  # after a rotation: now
    assert len(extension.requests) == 2

    extension.put_secret_value(SecretId=arn, SecretString="third")
    clock.now += secrets_manager.MAX_AGE_SECONDS
    assert secrets_manager.read(arn) == "third"  # too old: read again
    assert len(extension.requests) == 3

    secrets_manager.reset()  # a SnapStart restore forgets what was read
    assert secrets_manager.read(arn) == "third"
    assert len(extension.requests) == 4


@pytest.mark.parametrize("url", ["postgres://shop.internal:5432/shop", "mysql://shop.internal:3306/shop"])
def test_a_new_connection_after_a_password_rotation_uses_the_new_password(extension, url):
    # The backend's retry after the refusal reads afresh through the extension (tests.test_settings' proof).
    before, after = connection_params_after_rotation(extension, url)
    assert (before["password"], after["password"]) == ("first", "second")
    assert len(extension.requests) == 2


def test_the_webhook_secret_rotates_through_the_extension(extension, clock, settings):
    arn = extension.create_secret(Name="athm-webhook-secret", SecretString=WEBHOOK_SECRET)["ARN"]
    settings.ATHM_WEBHOOK_SECRET_ARN = arn
    webhook_secrets.check_at_start()
    assert webhook_secrets.matches(WEBHOOK_SECRET)
    new = "new-" + WEBHOOK_SECRET
    extension.put_secret_value(SecretId=arn, SecretString=f"{new},{WEBHOOK_SECRET}")
    clock.now += webhook_secrets.MAX_AGE_SECONDS
    assert webhook_secrets.secrets() == (new, WEBHOOK_SECRET)
    assert len(extension.requests) == 2


# --- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "tries"), [(400, 1), (403, 1), (404, 1), (429, 2), (500, 2), (503, 2)])
def test_an_error_answer_raises_naming_the_secret_and_the_status_never_the_value(extension, status, tries):
    arn = extension.create_secret(Name="athm-private-token", SecretString=PASSWORD)["ARN"]
    extension.fail_with = status
    with pytest.raises(secrets_manager.ExtensionError) as failed:
        secrets_manager._ask_extension(arn)
    assert str(failed.value) == (
        f"could not read the secret {arn} through the Parameters and Secrets extension: HTTP {status}"
    )
    assert PASSWORD not in everything_about(failed.value)
    assert len(extension.requests) == tries  # a 5xx or a 429 is tried once more, anything else is final


@pytest.mark.parametrize("first", [503, DROP], ids=["server-error", "dropped"])
def test_a_server_error_or_a_dropped_connection_then_an_answer_is_one_read(extension, first):
    arn = extension.create_secret(Name="athm-private-token", SecretString="sk_private")["ARN"]
    extension.statuses = [first]
    assert secrets_manager.read(arn) == "sk_private"
    assert len(extension.requests) == 2


def http_200(body: str) -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}".encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (f"{PASSWORD} is not HTTP\r\n".encode(), "BadStatusLine"),
        (http_200(f'{{"SecretString": "{PASSWORD}"'), None),  # cut short: not JSON
        (http_200(json.dumps({"ARN": "arn:aws:secretsmanager:..."})), None),
    ],
    ids=["not-http", "not-json", "no-value"],
)
def test_an_answer_that_cannot_be_read_raises_without_quoting_it(extension, raw, reason):
    arn = extension.create_secret(Name="athm-private-token", SecretString=PASSWORD)["ARN"]
    extension.raw = raw
    with pytest.raises(secrets_manager.ExtensionError) as failed:
        secrets_manager._ask_extension(arn)
    assert str(failed.value).endswith(reason or "its answer holds no SecretString or SecretBinary")
    assert PASSWORD not in everything_about(failed.value)
    assert failed.value.__context__ is None  # nothing that could quote the answer travels with it


def test_without_the_session_token_the_extension_is_not_asked_and_boto3_reads_it(
    extension, secretsmanager, monkeypatch
):
    """Under SnapStart Lambda gives container credentials instead of AWS_SESSION_TOKEN, and the extension
    refuses a request without it: boto3, whose credential chain reads them, reads the secret."""
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    arn = secretsmanager.create_secret(Name="athm-private-token", SecretString="sk_from_moto")["ARN"]
    assert secrets_manager.read(arn) == "sk_from_moto"
    assert extension.requests == []


def test_a_wrong_token_is_refused_by_the_extension(extension, monkeypatch):
    arn = extension.create_secret(Name="athm-private-token", SecretString=PASSWORD)["ARN"]
    monkeypatch.setenv("AWS_SESSION_TOKEN", "another-token")
    with pytest.raises(secrets_manager.ExtensionError, match=r"HTTP 401$"):
        secrets_manager._ask_extension(arn)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_extension_raises_after_a_second_try(monkeypatch):
    monkeypatch.setenv("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", str(free_port()))
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:athm-db-AbCdEf"
    with pytest.raises(secrets_manager.ExtensionError) as failed:
        secrets_manager._ask_extension(arn)
    assert str(failed.value).endswith(
        f"{arn} through the Parameters and Secrets extension: ConnectionRefusedError"
    )
    assert isinstance(failed.value.__context__, ConnectionRefusedError)


def test_a_slow_extension_is_given_up_on_within_the_timeout(extension, monkeypatch):
    arn = extension.create_secret(Name="athm-private-token", SecretString=PASSWORD)["ARN"]
    monkeypatch.setattr(secrets_manager, "_TIMEOUT", 0.2)
    extension.delay = 2
    started = time.monotonic()
    with pytest.raises(secrets_manager.ExtensionError, match=r"TimeoutError$") as failed:
        secrets_manager._ask_extension(arn)
    assert time.monotonic() - started < 1.5
    assert PASSWORD not in everything_about(failed.value)


def test_a_failed_refresh_keeps_the_webhook_secret_and_logs_no_value(extension, clock, settings, caplog):
    """webhook_secrets handles the extension's error as it handles Powertools': the last good value stays."""
    arn = extension.create_secret(Name="athm-webhook-secret", SecretString=WEBHOOK_SECRET)["ARN"]
    settings.ATHM_WEBHOOK_SECRET_ARN = arn
    assert webhook_secrets.secrets() == (WEBHOOK_SECRET,)
    extension.fail_with = 500
    clock.now += webhook_secrets.MAX_AGE_SECONDS
    assert webhook_secrets.secrets() == (WEBHOOK_SECRET,)
    # The extension failed, and so did boto3 (no AWS here): the last good value stays.
    assert [r for r in caplog.records if "could not read the webhook secret" in r.getMessage()]
    assert WEBHOOK_SECRET not in "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)


@pytest.mark.parametrize("port", ["twenty", "0", "70000"])
def test_a_port_that_is_not_one_is_a_configuration_error(monkeypatch, port):
    monkeypatch.setenv("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", port)
    with pytest.raises(ImproperlyConfigured, match="PARAMETERS_SECRETS_EXTENSION_HTTP_PORT is not a port"):
        secrets_manager.read("athm-private-token")


# --- a cold start through the extension: no boto3 ----------------------------------------------------------

COLD_START = """
import json, sys
import {module}
from django.conf import settings
from handler import webhook_secrets
print(json.dumps({{
    "boto": sorted(m for m in sys.modules if m.startswith(("boto3", "botocore.client", "botocore.session"))),
    "parameters": "aws_lambda_powertools.utilities.parameters" in sys.modules,
    "password": settings.DATABASES["default"]["PASSWORD"],
    "private_token": settings.ATHM_PRIVATE_TOKEN,
    "webhook_secrets": list(webhook_secrets.secrets()),
}}))
"""


@pytest.mark.parametrize("module", ["handler.app", "handler.relay", "handler.reconcile", "handler.migrate"])
def test_a_cold_start_reads_every_secret_through_the_extension_without_boto3(extension, child_env, module):
    database = extension.create_secret(
        Name="rds!db-1", SecretString=json.dumps({"username": "athm", "password": PASSWORD})
    )
    token = extension.create_secret(Name="athm-private-token", SecretString=" sk_private_0123 ")
    webhook = extension.create_secret(Name="athm-webhook-secret", SecretString=WEBHOOK_SECRET)
    env = {
        **child_env,
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(extension.port),
        "AWS_SESSION_TOKEN": TOKEN,
        # The backend that reads DB_SECRET_ARN is PostgreSQL's or MySQL's; nothing connects at import.
        "DATABASE_URL": "postgres://127.0.0.1:9/shop",
        "DB_SECRET_ARN": database["ARN"],
        "ATHM_PRIVATE_TOKEN_SECRET_ARN": token["ARN"],
        "ATHM_WEBHOOK_SECRET_ARN": webhook["ARN"],
    }
    env.pop("ATHM_WEBHOOK_SECRET")
    code = COLD_START.format(module=module)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {
        "boto": [],
        "parameters": False,
        "password": PASSWORD,
        "private_token": "sk_private_0123",
        "webhook_secrets": [WEBHOOK_SECRET],
    }
    assert {request["token"] for request in extension.requests} == {TOKEN}
    assert {request["secret_id"] for request in extension.requests} == {
        database["ARN"],
        token["ARN"],
        webhook["ARN"],
    }
    assert PASSWORD not in result.stderr and WEBHOOK_SECRET not in result.stderr


# --- without the extension: boto3 and Powertools, as before ---------------------------------------------


@pytest.fixture
def secretsmanager(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


@pytest.mark.parametrize("port", [None, "", "  "])
def test_without_the_port_secrets_are_read_with_boto3(extension, secretsmanager, monkeypatch, port):
    """The extension is running, but the environment does not name it: it is not asked."""
    if port is None:
        monkeypatch.delenv("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT")
    else:
        monkeypatch.setenv("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", port)
    arn = secretsmanager.create_secret(Name="athm-private-token", SecretString="sk_from_moto")["ARN"]
    database = secretsmanager.create_secret(Name="rds!db", SecretString=json.dumps({"password": "pw"}))["ARN"]
    assert secrets_manager.read(arn) == "sk_from_moto"
    assert secrets_manager.database_secret(database) == {"password": "pw"}
    assert secrets_manager.provider.cache_info().currsize == 1  # the one Powertools provider
    assert extension.requests == []

    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

    with pytest.raises(GetParameterError):  # the boto3 path's error, as before
        secrets_manager.read(arn.replace("athm-private-token", "not-there"))


# --- an extension that does not answer yet (AWS: callable in the INVOKE phase only) -----------------------


def test_an_extension_that_refuses_is_fallen_back_from_to_boto3(extension, secretsmanager, caplog):
    """During a cold start's set-up the extension may refuse (AWS documents it as callable once invoked):
    boto3 reads the secret instead, and the start goes on. The warning names the secret, not its value."""
    arn = secretsmanager.create_secret(Name="athm-private-token", SecretString=PASSWORD)["ARN"]
    database = secretsmanager.create_secret(Name="rds!db", SecretString=json.dumps({"password": "pw"}))["ARN"]
    extension.fail_with = 400
    assert secrets_manager.read(arn) == PASSWORD
    assert secrets_manager.database_secret(database) == {"password": "pw"}
    assert len(extension.requests) == 2  # asked first, each time
    warnings = [r for r in caplog.records if "reading the secret with boto3" in r.getMessage()]
    assert [w.error for w in warnings] == [
        f"could not read the secret {arn} through the Parameters and Secrets extension: HTTP 400",
        f"could not read the secret {database} through the Parameters and Secrets extension: HTTP 400",
    ]
    assert PASSWORD not in "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)

    # Once it answers, it is asked again (a fresh read: the value read with boto3 is boto3's to cache).
    extension.fail_with = None
    extension.values[arn] = {"ARN": arn, "SecretString": "sk_through_extension"}
    assert secrets_manager.read(arn, fresh=True) == "sk_through_extension"
