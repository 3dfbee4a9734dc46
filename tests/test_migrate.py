"""The migration function: CloudFormation's custom resource runs ``migrate`` on deploy and hears the result.

CloudFormation's pre-signed response URL is a small HTTP server on 127.0.0.1 that records what it is sent.
"""

import json
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import ROOT


class ResponseUrl:
    """Stands in for the S3 URL CloudFormation waits on: records each PUT body."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cfn-response?X-Amz-Signature=abc"

    def event(self, request_type: str) -> dict:
        return {
            "RequestType": request_type,
            "ResponseURL": self.url,
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/shop/1",
            "RequestId": "request-1",
            "LogicalResourceId": "Migrations",
            "ResourceType": "Custom::DatabaseMigrations",
            "ResourceProperties": {"CodeVersion": "7"},
        }


@pytest.fixture
def response_url():
    url = ResponseUrl()
    yield url
    url.server.shutdown()


INVOKE = """
import json, sys
from handler.local import LocalContext
from handler.migrate import lambda_handler
print("RESULT", json.dumps(lambda_handler(json.loads(sys.argv[1]), LocalContext(timeout_seconds=60))))
"""


def invoke(event: dict, env: dict) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", INVOKE, json.dumps(event)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line[7:])


def tables(path) -> set[str]:
    with sqlite3.connect(path) as database:
        return {row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type='table'")}


@pytest.mark.parametrize("request_type", ["Create", "Update"])
def test_a_deploy_migrates_the_database_and_tells_cloudformation(
    child_env, tmp_path, response_url, request_type
):
    database = tmp_path / "deploy.sqlite3"
    env = {**child_env, "DATABASE_URL": f"sqlite:///{database}", "AWS_LAMBDA_FUNCTION_NAME": "athm-migrate"}
    assert invoke(response_url.event(request_type), env)["status"] == "SUCCESS"
    assert {"athm_core_payment", "athm_core_outboxmessage", "django_migrations"} <= tables(database)
    [answer] = response_url.received
    assert answer["Status"] == "SUCCESS"
    assert (answer["RequestId"], answer["LogicalResourceId"]) == ("request-1", "Migrations")
    assert answer["StackId"].endswith("stack/shop/1") and answer["PhysicalResourceId"] == "athm-migrations"


def test_a_failed_migration_fails_the_deploy_with_the_reason(child_env, tmp_path, response_url):
    env = {
        **child_env,
        "DATABASE_URL": "postgres://athm@127.0.0.1:1/shop",  # nothing listens there
        "DB_CONNECT_TIMEOUT": "2",
        "AWS_LAMBDA_FUNCTION_NAME": "athm-migrate",
    }
    assert invoke(response_url.event("Update"), env)["status"] == "FAILED"
    [answer] = response_url.received
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("migrate failed: OperationalError")


def test_deleting_the_stack_keeps_the_data(child_env, tmp_path, response_url):
    database = tmp_path / "kept.sqlite3"
    env = {**child_env, "DATABASE_URL": f"sqlite:///{database}"}
    assert invoke(response_url.event("Delete"), env)["status"] == "SUCCESS"
    assert response_url.received[0]["Status"] == "SUCCESS"
    assert not database.exists() or "athm_core_payment" not in tables(database)


def test_invoked_directly_it_migrates_and_returns_the_output(child_env, tmp_path):
    database = tmp_path / "direct.sqlite3"
    env = {**child_env, "DATABASE_URL": f"sqlite:///{database}"}
    answer = invoke({}, env)
    assert answer["status"] == "migrated" and "Applying athm_core.0002_outbox... OK" in answer["output"]
    assert "athm_core_refund" in tables(database)


def test_a_migration_that_outlasts_the_function_still_gets_an_answer(response_url, monkeypatch):
    from handler import migrate
    from handler.local import LocalContext

    monkeypatch.setattr(migrate, "migrate", lambda: time.sleep(3) or "done")
    # 11.5 s left: the answer must go 10 s before the end, while the migration is still running.
    started = time.monotonic()
    result = migrate.lambda_handler(response_url.event("Update"), LocalContext(timeout_seconds=11.5))
    assert response_url.received == [
        {
            "Status": "FAILED",
            "Reason": "the migrations ran out of time",
            "PhysicalResourceId": "athm-migrations",
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/shop/1",
            "RequestId": "request-1",
            "LogicalResourceId": "Migrations",
        }
    ]
    assert time.monotonic() - started >= 3
    assert result == {"status": "FAILED", "reason": "the migrations ran out of time"}


def test_a_function_that_cannot_start_still_fails_the_deploy_at_once_with_the_reason(
    child_env, tmp_path, response_url
):
    # Without an answer, CloudFormation would wait an hour for the custom resource.
    env = {
        **child_env,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'never.sqlite3'}",
        "ATHM_RECEIVERS": "shop.no_such_receivers",
        "AWS_LAMBDA_FUNCTION_NAME": "athm-migrate",
    }
    assert invoke(response_url.event("Create"), env)["status"] == "FAILED"
    [answer] = response_url.received
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("the migration function could not start: ImproperlyConfigured")
    assert "shop.no_such_receivers" in answer["Reason"]
