"""The outbox: business events for consumers outside the process, kept in the database until published.

The processor writes one :class:`~athm_core.models.OutboxMessage` per state change (the same changes that
fire the signals) in the transaction that makes the change, so a change that rolls back leaves no message
and a committed change always has one. Duplicates, ignored and simulated events write none.

Publishing is someone else's job (SNS, in ``handler.publisher``). After commit, :func:`notify_publishers`
sends :data:`messages_committed`, naming the groups that have new messages; :func:`claim` hands out
pending messages under row locks, oldest first and in order within their group, and
:func:`mark_published` / :func:`mark_failed` record the result.
Nothing here knows about SNS.

The message body is a versioned JSON document, described by ``docs/schemas/athm-event.v1.schema.json``.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F, Min, QuerySet
from django.dispatch import Signal
from django.utils import timezone

from athm_core.conf import athm_settings
from athm_core.events import EventType
from athm_core.models import OutboxMessage, Payment, Refund, WebhookEvent
from athm_core.text import storable

log = logging.getLogger(__name__)

# The body's major version (a change that could break a consumer gets a new one; subscriptions filter on
# it), and its revision within it, one more for each compatible addition: 1 added ``payment.anomalies``.
SCHEMA_VERSION = 1
SCHEMA_REVISION = 1
# SNS takes 262,144 bytes per message, attributes included; the attributes need far less than the rest.
MAX_BODY_BYTES = 256 * 1024 - 2048

# Retries after a failed publish wait 5 s, 10 s, 20 s ... up to 15 minutes, never giving up.
_FIRST_RETRY = timedelta(seconds=5)
_LAST_RETRY = timedelta(minutes=15)

# Publishers at once take different rows: each looks at this many candidates per row it may lock.
_CANDIDATES_PER_ROW = 4

# Sent after commit with ``groups``, the set of group keys that have new pending messages.
messages_committed = Signal()


def enabled() -> bool:
    """Whether state changes write outbox messages (``ATHM_OUTBOX``; the handler sets it with a topic)."""
    return bool(athm_settings.ATHM_OUTBOX)


def group_key(payment: Payment) -> str:
    return f"payment-{payment.pk}"


def message(
    kind: EventType,
    *,
    payment: Payment,
    refund: Refund | None = None,
    occurred_at: datetime,
    webhook_event: WebhookEvent | None = None,
    event_id: uuid.UUID | None = None,
) -> OutboxMessage:
    """The unsaved outbox row announcing ``kind`` (its SNS type) for ``payment`` as it is now.

    ``event_id`` is the message's ``id``: the ``notice_id`` of the notice that announces the same change to
    the receivers (a new UUID when none is given).
    """
    now = timezone.now()
    outbox_message = OutboxMessage(
        event_id=event_id or uuid.uuid4(),
        event_type=kind.sns_type,
        transaction_type=payment.transaction_type,
        schema_version=SCHEMA_VERSION,
        group_key=group_key(payment),
        webhook_event=webhook_event,
        created_at=now,
        next_attempt_at=now,
    )
    document = {
        "schema_version": SCHEMA_VERSION,
        "schema_revision": SCHEMA_REVISION,
        "id": str(outbox_message.event_id),
        "type": kind.sns_type,
        "occurred_at": _time(occurred_at),
        "recorded_at": _time(now),
        "webhook_event_id": webhook_event.pk if webhook_event else None,
        "payment": _payment(payment),
        "refund": _refund(refund) if refund else None,
    }
    if athm_settings.ATHM_OUTBOX_CUSTOMER_DATA:
        document["customer"] = _customer(refund or payment)
    outbox_message.body = _fit(document)
    return outbox_message


def notify_publishers(groups: set[str]) -> None:
    """Tell the publishers (receivers of :data:`messages_committed`, if any) that ``groups`` have new
    messages, after commit. A publisher that raises is logged; the relay publishes what it could not."""
    for receiver, response in messages_committed.send_robust(sender=OutboxMessage, groups=groups):
        if isinstance(response, Exception):
            log.warning(
                "outbox publisher %s raised %s; the relay will publish the messages",
                getattr(receiver, "__qualname__", receiver),
                type(response).__name__,
            )


def add(messages: list[OutboxMessage]) -> None:
    """Save messages built by :func:`message`, in one statement, inside the caller's transaction."""
    if messages:
        OutboxMessage.objects.bulk_create(messages)


@contextmanager
def claim(
    *, limit: int, groups: Collection[str] | None = None, due_by: datetime | None = None
) -> Iterator[list[OutboxMessage]]:
    """Lock up to ``limit`` pending messages and yield those that may be published now, oldest first.

    Rows that another transaction holds are skipped (``SKIP LOCKED`` on PostgreSQL and MariaDB; SQLite
    has one writer at a time), so two publishers never hold the same message. A message is handed out
    only after every older pending message of its group, which keeps one payment's messages in order.
    ``due_by`` leaves out messages waiting for a retry later than that. Record each result with
    :func:`mark_published` or :func:`mark_failed` inside the block; the locks go when it ends.
    """
    with transaction.atomic():
        pending = OutboxMessage.objects.filter(published_at=None)
        if groups is not None:
            pending = pending.filter(group_key__in=groups)
        if due_by is not None:
            pending = pending.filter(next_attempt_at__lte=due_by)
        # Candidates first, without locks; then rows are locked by primary key only. Locking through a
        # secondary index lets MariaDB keep its skipped entries locked too, and a publisher marking a
        # message it has sent would then deadlock with one that merely looked at it.
        candidates = list(pending.order_by("id").values_list("id", flat=True)[: limit * _CANDIDATES_PER_ROW])
        locked = OutboxMessage.objects.select_for_update(skip_locked=True).filter(
            pk__in=candidates, published_at=None
        )
        yield _in_group_order(list(locked.order_by("id")[:limit]))


def mark_published(outbox_message: OutboxMessage, published_message_id: str = "") -> None:
    outbox_message.published_at = timezone.now()
    outbox_message.published_message_id = published_message_id[:100]
    OutboxMessage.objects.filter(pk=outbox_message.pk).update(
        published_at=outbox_message.published_at,
        published_message_id=outbox_message.published_message_id,
        attempts=F("attempts") + 1,
    )


def mark_failed(outbox_message: OutboxMessage, error: str) -> None:
    """Keep the message pending and schedule its next attempt further away each time."""
    attempts = outbox_message.attempts + 1
    delay = min(_LAST_RETRY, _FIRST_RETRY * 2 ** min(attempts - 1, 20))
    outbox_message.attempts = attempts
    outbox_message.next_attempt_at = timezone.now() + delay * random.uniform(0.8, 1.2)
    outbox_message.last_error = storable(error[:2000])
    OutboxMessage.objects.filter(pk=outbox_message.pk).update(
        attempts=attempts,
        next_attempt_at=outbox_message.next_attempt_at,
        last_error=outbox_message.last_error,
    )


@dataclass(frozen=True)
class Backlog:
    """How many rows wait, and since when the oldest has (its ``created_at``): the outbox's, the notices'."""

    pending: int
    oldest_created_at: datetime | None

    @classmethod
    def of(cls, pending: QuerySet) -> Backlog:
        return cls(pending.count(), pending.aggregate(oldest=Min("created_at"))["oldest"])

    def oldest_age(self, now: datetime | None = None) -> timedelta:
        if self.oldest_created_at is None:
            return timedelta(0)
        return (now or timezone.now()) - self.oldest_created_at


def backlog() -> Backlog:
    """How many messages are pending, and since when the oldest has waited."""
    return Backlog.of(OutboxMessage.objects.filter(published_at=None))


# --- ordering ------------------------------------------------------------------------------------------


def _in_group_order(locked: list[OutboxMessage]) -> list[OutboxMessage]:
    """The locked messages that head their group's pending messages, without a gap.

    A message whose group has an older pending message that is not in ``locked`` (another publisher holds
    it, or it waits for a retry) stays back, and so does everything after it in that group.
    """
    if not locked:
        return []
    by_group: dict[str, list[OutboxMessage]] = defaultdict(list)
    for outbox_message in locked:
        by_group[outbox_message.group_key].append(outbox_message)
    pending_ids: dict[str, list[int]] = defaultdict(list)
    rows = OutboxMessage.objects.filter(
        published_at=None, group_key__in=by_group, id__lte=locked[-1].pk
    ).order_by("id")
    for key, pk in rows.values_list("group_key", "id"):
        pending_ids[key].append(pk)
    ready = []
    for key, messages in by_group.items():
        for outbox_message, pending_id in zip(messages, pending_ids[key], strict=False):
            if outbox_message.pk != pending_id:
                break
            ready.append(outbox_message)
    return sorted(ready, key=lambda m: m.pk)


# --- the message body ----------------------------------------------------------------------------------


def _payment(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.pk,
        "transaction_type": payment.transaction_type,
        "status": payment.status,
        "ecommerce_id": payment.ecommerce_id,
        "reference_number": payment.reference_number,
        "daily_transaction_id": payment.daily_transaction_id,
        "total": _money(payment.total),
        "subtotal": _money(payment.subtotal),
        "tax": _money(payment.tax),
        "fee": _money(payment.fee),
        "net_amount": _money(payment.net_amount),
        "total_refunded_amount": _money(payment.total_refunded_amount),
        "metadata_1": payment.metadata_1,
        "metadata_2": payment.metadata_2,
        "business_name": payment.business_name,
        "transaction_date": _time(payment.transaction_date),
        "items": list(payment.items),
        "items_complete": True,
        "anomalies": [
            {"kind": each.get("kind", ""), "detail": each.get("detail", ""), "at": each.get("at")}
            for each in payment.anomalies or []
        ],
    }


def _refund(refund: Refund) -> dict[str, Any]:
    return {
        "id": refund.pk,
        "reference_number": refund.reference_number,
        "daily_transaction_id": refund.daily_transaction_id,
        "amount": _money(refund.amount),
        "transaction_date": _time(refund.transaction_date),
    }


def _customer(row: Payment | Refund) -> dict[str, str]:
    return {"name": row.name, "phone_number": row.phone_number, "email": row.email, "message": row.message}


def _money(value: Decimal | None) -> str | None:
    # Decimal formatting is exact: no float on the way.
    return None if value is None else f"{Decimal(value):.2f}"


def _time(value: datetime | None) -> str | None:
    return None if value is None else timezone.localtime(value).isoformat()


def _encode(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def _fit(document: dict[str, Any]) -> str:
    """The document as JSON, within SNS's size limit: items are left out of a message that would not fit.

    Every other field is bounded by its column's length, so without items the message always fits.
    """
    body = _encode(document)
    if len(body.encode()) <= MAX_BODY_BYTES:
        return body
    document["payment"] = {**document["payment"], "items": [], "items_complete": False}
    return _encode(document)


def groups_of(messages: Iterable[OutboxMessage]) -> set[str]:
    return {outbox_message.group_key for outbox_message in messages}
