"""The retention purge: stored webhook bodies, published outbox messages and delivered notices, past a
retention period.

A :class:`~athm_core.models.WebhookEvent` keeps the body as received, and so the customer's name, phone
number, email and message, for as long as it is kept. :func:`purge_events` empties, in the events received
before the cutoff, what copies the delivery's data: ``raw_body``, and ``error`` (a traceback, or the reason a
payload was refused, whose text may quote the payload's values). The row stays, with its outcome, event
type, idempotency key, request id, source IP and its links to the payment or refund, so that audits, counts
and duplicate detection keep working; ``purged_at`` says when it was emptied. An event purged once is not
purged or counted again.

Outbox messages published before the cutoff are deleted (their body went out long ago; with the setting
``ATHM_OUTBOX_CUSTOMER_DATA`` it holds customer data too), and so are the notices delivered before then
(:class:`~athm_core.models.Notice`: every receiver has had them). Pending messages and unfinished notices
are never touched, however old: they are still to be delivered, and a failed receiver's traceback is what
shows what to fix. A receiver's traceback goes from its notice once the receiver succeeds.

Payments and refunds are the business's records and are never touched.

Rows are changed in batches of ``BATCH_SIZE``, each in its own short transaction, so that a large table is
never locked for long and the webhooks arriving meanwhile are not held up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from athm_core.models import Notice, OutboxMessage, WebhookEvent

BATCH_SIZE = 1000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgeReport:
    """What a purge did, or with ``dry_run`` would do."""

    cutoff: datetime
    events: int  # webhook events whose stored body was emptied
    outbox_messages: int  # published outbox messages deleted
    notices: int  # delivered notices deleted
    dry_run: bool = False


def purge_events(older_than: timedelta, *, dry_run: bool = False) -> PurgeReport:
    """Empty the stored bodies of the webhook events received more than ``older_than`` ago, and delete the
    outbox messages published and the notices delivered before then. ``dry_run`` counts them and changes
    nothing, and takes any period that is not negative (0: everything a purge could take). Raises
    ``ValueError`` for a period that is negative, or zero without ``dry_run``."""
    if older_than < timedelta(0) or (older_than == timedelta(0) and not dry_run):
        # A zero period would empty the body of the event being processed right now.
        raise ValueError(f"the retention period must be positive, not {older_than}")
    cutoff = timezone.now() - older_than
    events = _unpurged_events(cutoff)
    published = OutboxMessage.objects.filter(published_at__isnull=False, published_at__lt=cutoff).order_by()
    delivered = Notice.objects.filter(delivered_at__isnull=False, delivered_at__lt=cutoff).order_by()
    if dry_run:
        return PurgeReport(cutoff, events.count(), published.count(), delivered.count(), dry_run=True)

    purged = 0
    while ids := list(events.values_list("pk", flat=True)[:BATCH_SIZE]):
        purged += _purge_batch(ids)
    messages = _delete(published)
    notices = _delete(delivered)
    log.info(
        "purged the stored bodies of %d webhook events, deleted %d outbox messages and %d notices, "
        "older than %s",
        purged,
        messages,
        notices,
        cutoff.isoformat(),
    )
    return PurgeReport(cutoff, purged, messages, notices)


def _unpurged_events(cutoff: datetime):
    # No ordering: any batch will do, and a sort would make the database read every match first. A delivery
    # still pending verification keeps its body, however old: it is all there is of it until ATH answers.
    return (
        WebhookEvent.objects.filter(purged_at=None, received_at__lt=cutoff)
        .exclude(outcome=WebhookEvent.Outcome.PENDING, settled_by=None)
        .order_by()
    )


def _purge_batch(ids: list[int]) -> int:
    # purged_at=None again: a purge running at the same time counts each event once between them.
    return WebhookEvent.objects.filter(pk__in=ids, purged_at=None).update(
        raw_body="", raw_bytes=None, error="", purged_at=timezone.now()
    )


def _delete(rows) -> int:
    """Delete ``rows`` (a queryset of one model), a batch per statement."""
    deleted = 0
    while ids := list(rows.values_list("pk", flat=True)[:BATCH_SIZE]):
        # The ids first, then a plain IN: MySQL/MariaDB cannot DELETE with a LIMIT in a subquery.
        deleted += rows.model.objects.filter(pk__in=ids).delete()[0]
    return deleted
