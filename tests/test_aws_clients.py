"""One boto3 session per container, and one client per service: the webhook secret, the database secret and
the private token share one Secrets Manager client; SNS has its own, from the same session (moto)."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from handler import aws, publisher, secrets_manager


@pytest.fixture
def fresh_aws(monkeypatch, settings):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    secrets_manager.reset()
    publisher.reset()
    with mock_aws():
        yield
    secrets_manager.reset()
    publisher.reset()


def test_every_secret_and_sns_share_one_session_and_one_client_per_service(fresh_aws, settings, monkeypatch):
    sessions = []
    real = boto3.session.Session

    def counted(*args, **kwargs):
        sessions.append(real(*args, **kwargs))
        return sessions[-1]

    monkeypatch.setattr(boto3.session, "Session", counted)
    client = boto3.client("secretsmanager", region_name="us-east-1")
    arns = [client.create_secret(Name=name, SecretString=name)["ARN"] for name in ("webhook", "token", "db")]
    assert [secrets_manager.read(arn) for arn in arns] == ["webhook", "token", "db"]
    settings.ATHM_SNS_TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:athm-events"
    sns = publisher.sns_client()
    assert len(sessions) == 1
    assert secrets_manager.provider("us-east-1").client is aws.client(
        "secretsmanager", "us-east-1", connect_timeout=2, read_timeout=2, attempts=2
    )
    assert sns._client_config.retries == {"mode": "standard", "total_max_attempts": 3}
    # After a reset (a SnapStart restore), new ones.
    publisher.reset()
    assert publisher.sns_client() is not sns and len(sessions) == 2
