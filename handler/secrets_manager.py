"""Secrets Manager, read in one place: the webhook secret, the database credentials, the private token.

Every read goes through Powertools' ``SecretsProvider`` over the container's one Secrets Manager client per
region (``handler.aws``), with bounded
waits (a read may happen during a webhook, and must give up long before the function's timeout). A value
is cached for ``MAX_AGE_SECONDS``; ``fresh=True`` reads it again now (after a rotation). boto3 is imported
on the first read only, so a container configured without secrets never loads it.

Who reads what, and when: ``handler.settings`` the database secret (``DB_SECRET_ARN``) and the private
token (``ATHM_PRIVATE_TOKEN_SECRET_ARN``) as the container starts; the database backends in
``handler.rds`` the database secret for each new connection; ``handler.webhook_secrets`` the webhook
secret (``ATHM_WEBHOOK_SECRET_ARN``) at start and every few minutes. Nothing here logs, and no error made
here carries a secret's value.
"""

from __future__ import annotations

import functools
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from handler import aws

# How long a read is trusted: a rotation reaches every warm container within this.
MAX_AGE_SECONDS = 300
_CONNECT_TIMEOUT = 2
_READ_TIMEOUT = 2
_ATTEMPTS = 2


def read(arn: str, *, fresh: bool = False) -> str:
    """The value of the secret ``arn`` (a plain string). Raises Powertools' ``GetParameterError``."""
    value = provider(_region(arn)).get(arn, max_age=MAX_AGE_SECONDS, force_fetch=fresh)
    return value.decode() if isinstance(value, bytes) else str(value)


def database_secret(arn: str, *, fresh: bool = False) -> dict[str, Any]:
    """The database secret's JSON: ``username`` and ``password``, and for a classic RDS secret ``engine``,
    ``host``, ``port`` and ``dbname``. Raises ``ImproperlyConfigured`` for a secret without a password."""
    value = provider(_region(arn)).get(arn, max_age=MAX_AGE_SECONDS, force_fetch=fresh, transform="json")
    if not isinstance(value, dict) or "password" not in value:
        raise ImproperlyConfigured(f"DB_SECRET_ARN {arn} is not a database secret (no 'password' key)")
    return value


@functools.cache
def provider(region: str | None) -> Any:
    """The container's one Powertools ``SecretsProvider`` for ``region`` (``None``: the environment's), over
    the container's one Secrets Manager client (``handler.aws``)."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    client = aws.client(
        "secretsmanager",
        region,
        connect_timeout=_CONNECT_TIMEOUT,
        read_timeout=_READ_TIMEOUT,
        attempts=_ATTEMPTS,
    )
    return SecretsProvider(boto3_client=client)


def reset() -> None:
    """Forget the clients and every value read (after a SnapStart restore; for tests)."""
    provider.cache_clear()
    aws.client.cache_clear()


def _region(arn: str) -> str | None:
    # A full ARN names its region; a bare secret name leaves it to the environment (AWS_REGION).
    parts = arn.split(":")
    return parts[3] if len(parts) > 6 and parts[0] == "arn" else None
