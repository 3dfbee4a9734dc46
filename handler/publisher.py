"""The SNS side of the outbox: publish committed outbox messages to ``ATHM_SNS_TOPIC_ARN``.

Two callers. Once a webhook's transaction commits, :func:`publish_committed` (connected to
``athm_core.outbox.messages_committed``) publishes the new messages: in the webhook function in Lambda,
right after the answer has gone (``handler.after_answer``), elsewhere at once. The relay (:func:`relay`,
run by ``athm relay`` and by ``handler.relay.lambda_handler`` on a schedule) publishes whatever is still
pending: messages whose publish failed, or whose container stopped between commit and publish.

A failed publish never fails the webhook: the message stays pending, a warning is logged, the metric
``OutboxPublishFailed`` counts it, and the relay tries again later, waiting longer each time. Messages
are locked while they are published, so two publishers never send the same one; a publisher that dies
after SNS accepted a message but before its commit leaves it to be sent again (at least once: consumers
deduplicate on the event id, and FIFO topics do it for them).

boto3 is imported only when a topic is configured; one client serves the container (``handler.aws``).
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from athm_core import outbox
from athm_core.models import OutboxMessage
from handler import after_answer, aws
from handler.observability import count, logger, metrics

# A webhook publishes inside its own invocation (in Lambda right after its answer), so SNS gets little time
# before the relay takes over.
_CONNECT_TIMEOUT = 1
_READ_TIMEOUT = 3
_ATTEMPTS = 3  # in all: the first try and two retries (botocore's standard mode)
# The longest one Publish call can take: every attempt waiting out both timeouts, and the backoff between
# attempts (botocore's standard mode: under a second, then under two). Work with a deadline starts no call
# later than this before it, so that it never holds claimed messages past its deadline.
_LONGEST_CALL = _ATTEMPTS * (_CONNECT_TIMEOUT + _READ_TIMEOUT) + 3
# After this many failures in a row, SNS is taken to be down and the rest waits for the next run.
_FAILURES_BEFORE_GIVING_UP = 3
# The messages a webhook publishes: its own, behind any older pending ones of the same payment.
_GROUP_LIMIT = 50


@functools.cache
def sns_client() -> Any:
    """The container's SNS client, in the topic's region. ``AWS_ENDPOINT_URL`` points it elsewhere."""
    region = settings.ATHM_SNS_TOPIC_ARN.split(":")[3]
    return aws.client(
        "sns", region, connect_timeout=_CONNECT_TIMEOUT, read_timeout=_READ_TIMEOUT, attempts=_ATTEMPTS
    )


def reset() -> None:
    """Forget the SNS client, and the AWS session it came from: the next publish creates them again (after
    a SnapStart restore; for tests, between AWS stand-ins)."""
    sns_client.cache_clear()
    aws.reset()


def publish_committed(sender: Any = None, *, groups: set[str], **kwargs: Any) -> None:
    """Publish the pending messages of ``groups``: after the answer in the webhook function when its
    extension is registered (``handler.after_answer``), at once otherwise. Whatever fails is left to the
    relay."""
    if not settings.ATHM_SNS_TOPIC_ARN:
        return
    after_answer.later(functools.partial(_publish_groups, set(groups)))


def _publish_groups(groups: set[str], deadline: float | None) -> None:
    """Publish ``groups``' pending messages; with a ``deadline`` (a :func:`time.monotonic` value: the end of
    the invocation's work after its answer), only calls that are sure to end by then. When Lambda ends the
    invocation it may freeze the container, and a claim left open would keep the messages locked (the relay
    skips locked rows) for as long as it stays frozen."""
    if deadline is not None:
        deadline -= _LONGEST_CALL
        if time.monotonic() >= deadline:
            count("OutboxPublishDeferred")
            logger.info("too little time left in the invocation: the messages are left for the relay")
            return
    try:
        with outbox.claim(limit=_GROUP_LIMIT, groups=groups) as messages:
            _publish(messages, deadline=deadline)
    except Exception as exc:
        # The change itself has committed; only the bookkeeping failed, and the relay repeats it.
        count("OutboxPublishFailed")
        logger.warning("outbox messages left for the relay", extra={"error_type": type(exc).__name__})


@dataclass
class RelayReport:
    published: int = 0
    failed: int = 0
    pending: int = 0
    oldest_pending_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def relay(*, batch_size: int = 25, deadline: float | None = None, retry_now: bool = False) -> RelayReport:
    """Publish pending messages that are due, in batches, until none is left, SNS fails or time is up.

    ``deadline`` is a :func:`time.monotonic` value; ``retry_now`` ignores the wait between retries (after
    an outage, once SNS is back). Reports what it did and the backlog it leaves, and puts the backlog in
    the metrics ``OutboxPending`` and ``OutboxOldestPendingAge``.
    """
    if not settings.ATHM_SNS_TOPIC_ARN:
        raise ImproperlyConfigured("ATHM_SNS_TOPIC_ARN is not set: the relay has nowhere to publish")
    report = RelayReport()
    while deadline is None or time.monotonic() < deadline:
        with outbox.claim(limit=batch_size, due_by=None if retry_now else timezone.now()) as messages:
            published, failed = _publish(messages, deadline=deadline)
        report.published += published
        report.failed += failed
        if not published or failed >= _FAILURES_BEFORE_GIVING_UP:
            break
    backlog = outbox.backlog()
    report.pending = backlog.pending
    report.oldest_pending_seconds = round(backlog.oldest_age().total_seconds(), 3)
    metrics.add_metric(name="OutboxPending", unit=MetricUnit.Count, value=report.pending)
    metrics.add_metric(
        name="OutboxOldestPendingAge", unit=MetricUnit.Seconds, value=report.oldest_pending_seconds
    )
    logger.info("outbox relay run", extra=report.as_dict())
    return report


def _publish(messages: list[OutboxMessage], *, deadline: float | None = None) -> tuple[int, int]:
    """Publish ``messages`` in order, recording each result. A failure holds back the rest of its group."""
    published = failed = failures_in_a_row = 0
    held_back: set[str] = set()
    for message in messages:
        if message.group_key in held_back:
            continue
        if failures_in_a_row >= _FAILURES_BEFORE_GIVING_UP or (deadline and time.monotonic() >= deadline):
            break
        try:
            response = sns_client().publish(**_request(message))
        except Exception as exc:  # any failure, SNS's or the network's: the message must stay pending
            outbox.mark_failed(message, f"{type(exc).__name__}: {exc}")
            held_back.add(message.group_key)
            failed += 1
            failures_in_a_row += 1
            count("OutboxPublishFailed")
            logger.warning(
                "SNS publish failed; the message stays pending",
                extra={
                    "outbox_event_id": str(message.event_id),
                    "event_type": message.event_type,
                    "attempts": message.attempts,
                    "error_type": type(exc).__name__,
                },
            )
        else:
            outbox.mark_published(message, response.get("MessageId", ""))
            published += 1
            failures_in_a_row = 0
            count("OutboxPublished")
    return published, failed


def _request(message: OutboxMessage) -> dict[str, Any]:
    """The Publish call for ``message``: attributes for filter policies, and FIFO ordering and dedup."""
    topic = settings.ATHM_SNS_TOPIC_ARN
    request: dict[str, Any] = {
        "TopicArn": topic,
        "Message": message.body,
        "MessageAttributes": {
            "event_type": {"DataType": "String", "StringValue": message.event_type},
            "transaction_type": {"DataType": "String", "StringValue": message.transaction_type},
            "schema_version": {"DataType": "Number", "StringValue": str(message.schema_version)},
        },
    }
    if topic.endswith(".fifo"):
        request["MessageGroupId"] = message.group_key
        request["MessageDeduplicationId"] = str(message.event_id)
    return request
