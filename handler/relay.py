"""The outbox relay's Lambda entry point, ``handler.relay.lambda_handler``, for a schedule (EventBridge).

Each run publishes the pending outbox messages that are due (:func:`handler.publisher.relay`), stopping
well before the function's timeout, and reports the backlog it leaves in the metrics ``OutboxPending`` and
``OutboxOldestPendingAge`` (the alarm on a stuck outbox watches the latter). ``athm relay`` does the same
from a shell.
"""

from __future__ import annotations

import handler.boot  # noqa: F401 - first: Django set up and the receivers imported

import time
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from handler import publisher
from handler.observability import logger, metrics

# Time kept back from the function's timeout: a publish in flight when the deadline passes finishes.
_MARGIN_SECONDS = 10

if not settings.ATHM_SNS_TOPIC_ARN:
    raise ImproperlyConfigured("ATHM_SNS_TOPIC_ARN is not set: the relay has nowhere to publish")
publisher.sns_client()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    remaining = context.get_remaining_time_in_millis() / 1000
    deadline = time.monotonic() + max(remaining - _MARGIN_SECONDS, remaining / 2)
    return publisher.relay(deadline=deadline).as_dict()
