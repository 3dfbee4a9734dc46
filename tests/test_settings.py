"""Database settings from the environment: DATABASE_URL, an RDS secret (moto), or local SQLite."""

import json
import subprocess
import sys

import boto3
import pytest
from django.core.exceptions import ImproperlyConfigured
from moto import mock_aws
from moto.server import ThreadedMotoServer

from handler import webhook_secrets
from handler.settings import database_settings
from tests.conftest import ROOT


@pytest.fixture
def secretsmanager(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def create_secret(client, name: str, value: dict) -> str:
    return client.create_secret(Name=name, SecretString=json.dumps(value))["ARN"]


def test_rds_managed_secret_gives_the_credentials_and_the_url_the_rest(secretsmanager):
    # What RDS creates with ManageMasterUserPassword: only the credentials.
    arn = create_secret(secretsmanager, "rds!db-1234", {"username": "athm", "password": "p@ss/word:1"})
    config = database_settings({"DB_SECRET_ARN": arn, "DATABASE_URL": "postgres://shop.internal:5432/shop"})
    assert config["ENGINE"] == "handler.rds.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"]) == ("shop.internal", 5432, "shop")
    assert (config["USER"], config["PASSWORD"]) == ("athm", "p@ss/word:1")


def test_classic_rds_secret_names_the_database_itself(secretsmanager):
    arn = create_secret(
        secretsmanager,
        "shop-db",
        {
            "engine": "mariadb",
            "host": "shop.cluster.example",
            "port": 3306,
            "dbname": "shop",
            "username": "athm",
            "password": "secret",
        },
    )
    config = database_settings({"DB_SECRET_ARN": arn})
    assert config["ENGINE"] == "handler.rds.mysql"
    assert (config["HOST"], config["PORT"], config["NAME"]) == ("shop.cluster.example", 3306, "shop")
    assert (config["USER"], config["PASSWORD"]) == ("athm", "secret")
    assert config["OPTIONS"]["charset"] == "utf8mb4"


def test_a_managed_secret_without_a_url_is_a_clear_error(secretsmanager):
    arn = create_secret(secretsmanager, "rds!db-5678", {"username": "athm", "password": "x"})
    with pytest.raises(ImproperlyConfigured, match="set DATABASE_URL too"):
        database_settings({"DB_SECRET_ARN": arn})


def test_a_secret_that_is_not_a_database_secret_is_refused(secretsmanager):
    arn = create_secret(secretsmanager, "webhook", {"secret": "abc"})
    with pytest.raises(ImproperlyConfigured, match="not a database secret"):
        database_settings({"DB_SECRET_ARN": arn, "DATABASE_URL": "postgres://h/db"})


def test_connections_persist_and_are_checked():
    config = database_settings(
        {"DATABASE_URL": "postgres://u:p@db.example:5432/shop", "DB_CONNECT_TIMEOUT": "3"}
    )
    assert config["CONN_MAX_AGE"] is None and config["CONN_HEALTH_CHECKS"] is True
    assert config["OPTIONS"]["connect_timeout"] == 3


def test_local_default_is_an_sqlite_file_that_queues_writers():
    config = database_settings({})
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert str(config["NAME"]).endswith("athm.sqlite3")
    assert config["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def connection_params_after_rotation(secretsmanager, url: str) -> tuple[dict, dict]:
    """Connection parameters before and after the secret's password rotates, with the database
    refusing the old password the way RDS would."""
    from django.db.utils import load_backend

    arn = create_secret(secretsmanager, "rds!db-rotating", {"username": "athm", "password": "first"})
    config = database_settings({"DB_SECRET_ARN": arn, "DATABASE_URL": url})
    config.update(TIME_ZONE=None, AUTOCOMMIT=True, ATOMIC_REQUESTS=False, TEST={})
    wrapper = load_backend(config["ENGINE"]).DatabaseWrapper(config, alias="rotation-test")
    current = {"password": "first"}
    attempts = []

    def connect(self, conn_params):
        attempts.append(conn_params["password"])
        if conn_params["password"] != current["password"]:
            raise self.Database.OperationalError("password authentication failed for user athm")
        return conn_params

    base = next(cls for cls in type(wrapper).__mro__ if cls.__module__.startswith("django.db.backends."))
    before = wrapper.get_connection_params()
    secretsmanager.put_secret_value(
        SecretId=arn, SecretString=json.dumps({"username": "athm", "password": "second"})
    )
    current["password"] = "second"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base, "get_new_connection", connect)
        # The cached read still says "first": the refusal makes the backend read the secret again.
        after = wrapper.get_new_connection(wrapper.get_connection_params())
    assert attempts == ["first", "second"]
    return before, after


@pytest.mark.parametrize("url", ["postgres://shop.internal:5432/shop", "mysql://shop.internal:3306/shop"])
def test_a_new_connection_after_a_password_rotation_uses_the_new_password(secretsmanager, url):
    before, after = connection_params_after_rotation(secretsmanager, url)
    assert (before["user"], before["password"]) == ("athm", "first")
    assert (after["user"], after["password"]) == ("athm", "second")


def test_the_webhook_secret_comes_from_secrets_manager_when_an_arn_is_given(secretsmanager, settings):
    arn = secretsmanager.create_secret(
        Name="athm-webhook", SecretString="new-secret-0123456789abcdef, old-one"
    )["ARN"]
    webhook_secrets.reset()
    try:
        settings.ATHM_WEBHOOK_SECRET_ARN, settings.ATHM_WEBHOOK_SECRET = arn, "ignored"
        assert webhook_secrets.secrets() == ("new-secret-0123456789abcdef", "old-one")
        settings.ATHM_WEBHOOK_SECRET_ARN, settings.ATHM_WEBHOOK_SECRET = "", "a,b"
        assert webhook_secrets.secrets() == ("a", "b")
        settings.ATHM_WEBHOOK_SECRET = ""
        assert webhook_secrets.secrets() == ()
    finally:
        webhook_secrets.reset()


PRINT_PRIVATE_TOKEN = (
    "import django; django.setup(); from django.conf import settings; print(settings.ATHM_PRIVATE_TOKEN)"
)


def test_the_private_token_comes_from_secrets_manager_in_a_new_process(child_env):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "secretsmanager",
            region_name="us-east-1",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        arn = client.create_secret(Name="athm-private-token", SecretString=" sk_private_0123 ")["ARN"]
        env = {
            **child_env,
            "ATHM_PRIVATE_TOKEN_SECRET_ARN": arn,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        command = [sys.executable, "-c", PRINT_PRIVATE_TOKEN]
        result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sk_private_0123"


PRINT_APPLY_UNVERIFIED_AFTER = (
    "import handler.boot; from athm_core.conf import athm_settings;"
    " print(athm_settings.ATHM_APPLY_UNVERIFIED_AFTER)"
)


@pytest.mark.parametrize(("value", "printed"), [("", "None"), ("900", "900.0")])
def test_applying_unverified_is_off_unless_the_environment_gives_seconds(child_env, value, printed):
    env = {**child_env, "ATHM_APPLY_UNVERIFIED_AFTER": value}
    command = [sys.executable, "-c", PRINT_APPLY_UNVERIFIED_AFTER]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == printed


def test_a_postgresql_url_without_psycopg_names_the_extra_to_install(monkeypatch):
    """``make serve`` installs no database driver: pointing it at PostgreSQL says what to install, instead
    of Django's "Error loading psycopg2 or psycopg module" at the first query."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "psycopg" else find_spec(name, *args)
    )
    with pytest.raises(ImproperlyConfigured, match=r"needs psycopg: pip install -e '\.\[postgres\]'"):
        database_settings({"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/shop"})
