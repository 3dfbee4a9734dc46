"""Second chances for recorded webhook events: redispatch missed signals, reprocess stored bodies.

:func:`redispatch` sends each signal that a receiver raised on (``WebhookEvent.receiver_errors``) again, to
that receiver only, with the rows as they are now. It never changes a payment or a refund. A receiver that
succeeds has its entry removed from ``receiver_errors``; one that raises again keeps its entry, with the new
traceback and an ``attempts`` count. The event's row is locked while its receivers run, so that two
redispatches at once cannot both call the same receiver; each receiver runs in a savepoint, so that the
database writes of one that raises are undone and do not spoil the others'.

:func:`reprocess` hands a stored delivery's raw body to :func:`athm_core.receive.receive`, exactly like a
new delivery: checked with ATH Móvil (``ATHM_VERIFIER``, or the ``check`` given), then processed. The
original row stays as it was (the audit of what happened then); the attempt is recorded as a new
``WebhookEvent`` whose ``request_id`` says ``reprocess of #ID``. Whatever was applied before comes out as a
duplicate, never twice. An unexpected error is recorded on the new event with its traceback (outcome
``failed``). Refused, with the reason and nothing recorded: purged events (their body is gone), rejected
ones (ATH Móvil or a recorded payment contradicts them), bodies that still do not parse, and events ATH
Móvil cannot confirm now.

Both return one :class:`Result` per event, in the order given, and record nothing for a refused event.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction

from athm_core import dispatch
from athm_core.ath.verification import Unavailable
from athm_core.events import EventType
from athm_core.models import WebhookEvent
from athm_core.payloads import PayloadError
from athm_core.receive import Check, receive

log = logging.getLogger(__name__)

Outcome = WebhookEvent.Outcome

# Statuses of a Result besides the outcomes of a reprocessed event.
SENT = "sent"  # every failed receiver ran without raising
STILL_FAILING = "still failing"  # at least one failed receiver raised again, or is not connected
NOTHING_TO_DO = "nothing to do"  # the event has no failed receivers
REFUSED = "refused"

# Outcomes after which reprocessing the same event can only give a duplicate.
_SETTLED = [Outcome.APPLIED, Outcome.DUPLICATE, Outcome.IGNORED, Outcome.SIMULATED]


@dataclass(frozen=True)
class Result:
    """What became of one event: ``status`` (an outcome, or one of the statuses above) and why."""

    event_id: int
    status: str
    detail: str = ""
    # reprocess: the WebhookEvent recording the new attempt.
    new_event_id: int | None = None

    def __str__(self) -> str:
        text = f"event {self.event_id}: {self.status}"
        if self.new_event_id is not None:
            text += f" (recorded as event {self.new_event_id})"
        return f"{text}: {self.detail}" if self.detail else text


# --- redispatch ------------------------------------------------------------------------------------------


def events_with_failed_receivers():
    """Every event with a receiver failure recorded, oldest first."""
    # Filtered in Python: an empty JSON list compares differently on SQLite, PostgreSQL and MySQL.
    ids = [pk for pk, errors in WebhookEvent.objects.values_list("pk", "receiver_errors") if errors]
    return WebhookEvent.objects.filter(pk__in=ids).order_by("received_at", "pk")


def redispatch(events: Iterable[WebhookEvent | int]) -> list[Result]:
    """Send the signals that receivers of ``events`` raised on again, to those receivers only."""
    return [_redispatch_one(_pk(event)) for event in events]


def _redispatch_one(pk: int) -> Result:
    with transaction.atomic():
        record = WebhookEvent.objects.select_for_update().filter(pk=pk).first()
        if record is None:
            return Result(pk, REFUSED, "no such webhook event")
        failures = [f for f in record.receiver_errors or [] if isinstance(f, dict)]
        if not failures:
            return Result(pk, NOTHING_TO_DO, "no failed receivers")
        remaining, sent, problems = [], [], []
        for failure in failures:
            name = str(failure.get("receiver", ""))
            notice = dispatch.missed_notice(record, failure)
            if notice is None:
                remaining.append(failure)
                signal = failure.get("signal")
                if EventType.for_signal_name(str(signal)) is None:
                    problems.append(f"{name}: {signal!r} is not a signal of athm_core.signals")
                else:
                    problems.append(f"{name}: the rows of its {signal} signal are gone")
                continue
            try:
                with transaction.atomic():
                    dispatch.send_to_receiver(notice, name)
            except dispatch.ReceiverNotConnected as exc:
                remaining.append(failure)
                problems.append(str(exc))
            except Exception as exc:
                log.error("receiver %s raised %s again on webhook event %s", name, type(exc).__name__, pk)
                remaining.append(dispatch.failed_again(failure, exc))
                problems.append(f"{name} raised {type(exc).__name__} again")
            else:
                sent.append(f"{notice.kind.signal_name} to {name}")
        WebhookEvent.objects.filter(pk=pk).update(receiver_errors=remaining)
    log.info("redispatched %d signal(s) of webhook event %s; %d still failing", len(sent), pk, len(remaining))
    detail = "; ".join([*(f"sent {s}" for s in sent), *problems])
    return Result(pk, STILL_FAILING if remaining else SENT, detail)


# --- reprocess -------------------------------------------------------------------------------------------


def failed_events():
    """The failed events worth reprocessing: not purged, and not settled since by a redelivery or a
    reprocess; the latest failed delivery of each event only, oldest first."""
    settled = WebhookEvent.objects.filter(outcome__in=_SETTLED).exclude(idempotency_key="")
    candidates = (
        WebhookEvent.objects.filter(outcome=Outcome.FAILED, purged_at=None)
        .exclude(raw_body="")
        .exclude(idempotency_key__in=settled.values("idempotency_key"))
        .order_by("-received_at", "-pk")
    )
    latest: dict[str, int] = {}
    for pk, key in candidates.values_list("pk", "idempotency_key"):
        latest.setdefault(key or f"#{pk}", pk)
    return WebhookEvent.objects.filter(pk__in=latest.values()).order_by("received_at", "pk")


def reprocess(events: Iterable[WebhookEvent | int], *, check: Check | None = None) -> list[Result]:
    """Process the stored raw bodies of ``events`` again; each attempt is recorded as a new event.

    ``check`` replaces ``ATHM_VERIFIER`` (see :func:`athm_core.receive.receive`).
    """
    return [_reprocess_one(_pk(event), check) for event in events]


def _reprocess_one(pk: int, check: Check | None) -> Result:
    record = WebhookEvent.objects.filter(pk=pk).first()
    if record is None:
        return Result(pk, REFUSED, "no such webhook event")
    if record.purged_at is not None or not record.raw_body:
        when = f" on {record.purged_at:%Y-%m-%d}" if record.purged_at else ""
        return Result(pk, REFUSED, f"its stored body was purged{when}; there is nothing to reprocess")
    if record.outcome == Outcome.REJECTED:
        return Result(pk, REFUSED, f"it was rejected ({record.error or 'contradicted'}); it is not applied")
    try:
        delivery = receive(
            record.raw_body.encode("utf-8"),
            source_ip=record.source_ip,
            request_id=f"reprocess of #{pk}",
            check=check,
            keep_invalid=False,
        )
    except PayloadError as exc:
        return Result(pk, REFUSED, f"its body is still not a valid event: {exc}")
    except Unavailable as exc:
        return Result(pk, REFUSED, f"it cannot be verified now ({exc}); try later")
    new = delivery.record
    if delivery.outcome == Outcome.FAILED:
        where = "the traceback is on the new event" if new else "the database could not record it"
        return Result(pk, delivery.outcome, f"{delivery.error}; {where}", new and new.pk)
    if delivery.outcome == Outcome.REJECTED:
        return Result(pk, delivery.outcome, delivery.error, new.pk)
    return Result(pk, delivery.outcome, _receivers_note(new), new.pk)


def _receivers_note(record: WebhookEvent) -> str:
    if not record.receiver_errors:
        return ""
    return f"{len(record.receiver_errors)} receiver(s) raised; `athm redispatch {record.pk}` sends again"


def _pk(event: WebhookEvent | int) -> int:
    return event.pk if isinstance(event, WebhookEvent) else int(event)
