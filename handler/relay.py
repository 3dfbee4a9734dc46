"""The relay's Lambda entry point, ``handler.relay.lambda_handler``, run every minute (EventBridge).

Each run finishes what webhook deliveries left after their commit (:func:`athm_core.replay.finish_pending`:
refunds tied to payments recorded since, notices whose delivery did not finish, receivers that failed and
are due for another try), then, when ``ATHM_SNS_TOPIC_ARN`` is set, publishes the pending outbox messages
(:func:`handler.publisher.relay`), stopping well before the function's timeout. It reports both backlogs in
metrics: ``NoticesPending`` and ``NoticeOldestPendingAge`` (watched by the stuck-notices alarm),
``NoticesDeliveredLate``, ``ReceiverFailed``, ``WebhookAnomalies`` (found by what it verified or linked),
``VerificationsPending``, ``VerificationOldestPendingAge``, ``AppliedUnverified``, and ``OutboxPending`` and
``OutboxOldestPendingAge``.
``athm relay`` does the same from a shell.
"""

from __future__ import annotations

import handler.boot  # first: Django set up and the receivers imported

import time
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from django.conf import settings

from athm_core import replay
from handler import publisher
from handler.observability import logger, metrics

# Time kept back from the function's timeout: a receiver or a publish in flight at the deadline finishes.
_MARGIN_SECONDS = 20

if settings.ATHM_SNS_TOPIC_ARN:
    publisher.sns_client()


def run(*, deadline: float | None = None, retry_now: bool = False, batch_size: int = 25) -> dict[str, Any]:
    """One relay run: notices first (the receivers), then SNS. Returns both reports as dictionaries.

    The SNS part runs even when the notices' part fails (the database, say); the failure is raised after.
    """
    result: dict[str, Any] = {}
    failure: Exception | None = None
    try:
        notices = replay.finish_pending(retry_now=retry_now, deadline=deadline)
    except Exception as exc:
        failure = exc
        logger.error("the notices' relay failed", extra={"error_type": type(exc).__name__})
    else:
        metrics.add_metric(name="NoticesPending", unit=MetricUnit.Count, value=notices.pending)
        metrics.add_metric(
            name="NoticeOldestPendingAge", unit=MetricUnit.Seconds, value=notices.oldest_pending_seconds
        )
        metrics.add_metric(name="NoticesDeliveredLate", unit=MetricUnit.Count, value=notices.late)
        verification = notices.verification or {}
        metrics.add_metric(
            name="VerificationsPending", unit=MetricUnit.Count, value=verification.get("pending", 0)
        )
        metrics.add_metric(
            name="VerificationOldestPendingAge",
            unit=MetricUnit.Seconds,
            value=verification.get("oldest_pending_seconds", 0.0),
        )
        anomalies = notices.anomalies + verification.get("anomalies", 0)
        if anomalies:
            metrics.add_metric(name="WebhookAnomalies", unit=MetricUnit.Count, value=anomalies)
        settled = verification.get("settled", {})
        for outcome, metric in (("rejected", "WebhookRejected"), ("unverified", "WebhookUnverifiable")):
            if settled.get(outcome):
                metrics.add_metric(name=metric, unit=MetricUnit.Count, value=settled[outcome])
        if verification.get("unverified_payments"):
            metrics.add_metric(
                name="WebhookUnverifiablePayment",
                unit=MetricUnit.Count,
                value=verification["unverified_payments"],
            )
        if verification.get("applied_unverified"):
            metrics.add_metric(
                name="AppliedUnverified", unit=MetricUnit.Count, value=verification["applied_unverified"]
            )
        if notices.failed:
            metrics.add_metric(name="ReceiverFailed", unit=MetricUnit.Count, value=notices.failed)
        logger.info("notices relay run", extra=notices.as_dict())
        result["notices"] = notices.as_dict()
    if settings.ATHM_SNS_TOPIC_ARN:
        outbox = publisher.relay(batch_size=batch_size, deadline=deadline, retry_now=retry_now)
        result["outbox"] = outbox.as_dict()
    if failure is not None:
        raise failure
    return result


@logger.inject_lambda_context(clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    remaining = context.get_remaining_time_in_millis() / 1000
    deadline = time.monotonic() + max(remaining - _MARGIN_SECONDS, remaining / 2)
    return run(deadline=deadline)


handler.boot.ready()  # last: the set-up is done, collection back on, SnapStart hooks registered
