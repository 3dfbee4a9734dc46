"""AWS clients, one of each per container: one boto3 session, and one client per service and region.

The webhook secret, the database secret and the private token (``handler.secrets_manager``) share one
Secrets Manager client, and SNS (``handler.publisher``) has one; each is created the first time it is asked
for, from the one session (a session and a client cost tens of milliseconds of a cold start each: issue 16's
measurements). boto3 is imported on the first call only, so a container with neither a topic nor a secret
ARN never loads it. :func:`reset` forgets them all (after a SnapStart restore, whose HTTP pools are stale;
and for tests).
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def session() -> Any:
    """The container's one boto3 session (credentials from the environment, as boto3 finds them)."""
    import boto3

    return boto3.session.Session()


@functools.cache
def client(
    service: str, region: str | None, *, connect_timeout: float, read_timeout: float, attempts: int
) -> Any:
    """The container's one client for ``service`` in ``region`` (``None``: the environment's), with bounded
    waits and ``attempts`` in all (botocore's standard retry mode)."""
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": attempts},
    )
    return session().client(service, region_name=region, config=config)


def reset() -> None:
    """Forget the session and every client: the next call creates them again."""
    client.cache_clear()
    session.cache_clear()
