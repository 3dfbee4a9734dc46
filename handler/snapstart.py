"""Lambda SnapStart (python3.12 and later): what a snapshot must not keep, and what a restore redoes.

With SnapStart on a published version, Lambda runs the function's set-up once, snapshots the memory, and
starts every new container from that snapshot: the cold start's set-up is paid at publish time, not by the
first webhook. What the set-up left in memory is then shared by every container restored from it, and may
be old by the time one starts. So:

- **before the snapshot**: database connections are closed (a socket does not survive a restore);
- **after each restore**:
  - the random number generator is reseeded (every container would otherwise draw the same numbers:
    ``random``'s jitter in the outbox's retry waits, for one; ``uuid4`` and ``secrets`` read the OS);
  - database connections are closed again, in case one was opened since;
  - the AWS session and clients are created anew (their HTTP pools and credentials are the snapshot's);
  - the secrets are read again (a rotation since the snapshot): the webhook secret, the private token;
    the database secret on the next connection. A read that fails keeps the snapshot's value, with a
    warning (the webhook secret is read again a minute later, as after any failed refresh): a restore
    never fails because Secrets Manager was slow for a moment.

The hooks are registered by :func:`handler.boot.ready` through the runtime's ``snapshot_restore_py``
module, which exists only in Lambda's python3.12+ runtimes: elsewhere :func:`register` does nothing.
"""

from __future__ import annotations

import random

from django.conf import settings
from django.db import connections

from handler import publisher, secrets_manager, webhook_secrets
from handler.observability import logger


def register() -> bool:
    """Register :func:`before_snapshot` and :func:`after_restore` with the runtime; whether it has them."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:  # not in Lambda, or a runtime without SnapStart
        return False
    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)
    return True


def before_snapshot() -> None:
    connections.close_all()


def after_restore() -> None:
    random.seed()
    connections.close_all()
    publisher.reset()  # the session, the SNS client and the Secrets Manager clients
    secrets_manager.reset()  # and every value read
    if settings.ATHM_PRIVATE_TOKEN_SECRET_ARN:
        try:
            settings.ATHM_PRIVATE_TOKEN = secrets_manager.read(settings.ATHM_PRIVATE_TOKEN_SECRET_ARN).strip()
        except Exception as exc:
            logger.warning(
                "could not read the private token after a restore; the snapshot's stays in use",
                extra={"error_type": type(exc).__name__},
            )
    webhook_secrets.expire()
    webhook_secrets.secrets()  # read now, not by the first webhook; a failure keeps the snapshot's
    if settings.ATHM_SNS_TOPIC_ARN:
        publisher.sns_client()
    logger.info("restored from a SnapStart snapshot: secrets read again, clients and connections anew")
