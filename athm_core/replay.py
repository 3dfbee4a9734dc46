"""Second chances: finish what deliveries left unfinished, redispatch notices, reprocess stored bodies.

:func:`finish_pending` is the relay's work (``athm relay``, and the scheduled relay function): refunds that
wait for a payment now recorded are tied to it, and notices unfinished for more than a minute (their
delivery's process died, or its database went away) or whose receivers failed and are due for another try
(with a backoff) are delivered (:mod:`athm_core.dispatch`).

:func:`redispatch` delivers an event's unfinished notices now, whatever their backoff, to the receivers
that have not had them (those that failed, or never ran), with the rows as they are now. It never changes
a payment or a refund. A receiver that succeeds is marked delivered; one that raises again keeps its
failure, with the new traceback and its ``attempts`` count.

:func:`reprocess` hands a stored delivery's raw body to :func:`athm_core.receive.receive`, exactly like a
new delivery: checked with ATH Móvil (``ATHM_VERIFIER``, or the ``check`` given), then processed. The
original row stays as it was (the audit of what happened then); the attempt is recorded as a new
``WebhookEvent`` whose ``request_id`` says ``reprocess of #ID``. Whatever was applied before comes out as a
duplicate, never twice (and a duplicate delivers its payment's unfinished notices). An unexpected error is
recorded on the new event with its traceback (outcome ``failed``). Refused, with the reason and nothing
recorded: purged events (their body is gone), rejected ones (ATH Móvil or a recorded payment contradicts
them), bodies that still do not parse, and events ATH Móvil cannot confirm now.

Both return one :class:`Result` per event, in the order given, and record nothing for a refused event.

:func:`verify_pending` is the relay's other work: deliveries kept ``pending`` because ATH Móvil could not be
asked (unreachable, slow, refusing calls) are verified again, with a backoff, until ATH answers; each is then
processed once, like a new delivery, and marked settled by the delivery that did it (``settled_by``). With
``ATHM_APPLY_UNVERIFIED_AFTER`` set, one that has waited that long is applied unverified, and says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from athm_core import dispatch, processor
from athm_core.ath.verification import (
    CONFIRMATION_DEADLINE,
    NotConfirmedYet,
    Unavailable,
    Unverifiable,
    next_verification,
    one_report_call_per_day,
)
from athm_core.conf import athm_settings
from athm_core.models import Notice, WebhookEvent
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
SETTLED = [Outcome.APPLIED, Outcome.DUPLICATE, Outcome.IGNORED, Outcome.SIMULATED]


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
    """Every event with an unfinished notice (a receiver failed, or never ran), oldest first."""
    pending = Notice.objects.filter(delivered_at=None).exclude(webhook_event=None)
    return WebhookEvent.objects.filter(pk__in=pending.values("webhook_event")).order_by("received_at", "pk")


def redispatch(events: Iterable[WebhookEvent | int]) -> list[Result]:
    """Deliver the unfinished notices of ``events`` now, to the receivers that have not had them."""
    return [_redispatch_one(_pk(event)) for event in events]


def _redispatch_one(pk: int) -> Result:
    record = WebhookEvent.objects.filter(pk=pk).first()
    if record is None:
        return Result(pk, REFUSED, "no such webhook event")
    ids = list(record.notices.filter(delivered_at=None).values_list("pk", flat=True))
    if not ids:
        return Result(pk, NOTHING_TO_DO, "no failed receivers")
    report = dispatch.deliver_ids(ids)
    remaining = Notice.objects.filter(pk__in=ids, delivered_at=None).count()
    log.info("redispatched webhook event %s: %s", pk, "; ".join(report.calls))
    detail = "; ".join(report.calls)
    if remaining and not report.calls:
        detail = "another process is delivering its notices now"
    return Result(pk, STILL_FAILING if remaining else SENT, detail)


# --- what a delivery left unfinished (the relay) ---------------------------------------------------------


@dataclass
class PendingReport:
    """What :func:`finish_pending` did, and the notices it left."""

    linked: int = 0  # waiting refunds tied to their payment
    delivered: int = 0  # notices finished
    late: int = 0  # of those, notices a delivery had left unfinished (the rest: the links' own)
    failed: int = 0  # receivers that raised (or were not connected)
    pending: int = 0  # notices still unfinished afterwards
    oldest_pending_seconds: float = 0.0
    anomalies: int = 0  # money that cannot be right, found by tying waiting refunds to their payment
    # What verify_pending did first (VerificationReport.as_dict()).
    verification: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def finish_pending(*, retry_now: bool = False, deadline: float | None = None) -> PendingReport:
    """Finish what deliveries left: verify again the deliveries pending verification that are due
    (:func:`verify_pending`), tie waiting refunds to payments now recorded, and deliver the notices
    unfinished for longer than :data:`athm_core.dispatch.GRACE` and due for another try (``retry_now``: all
    of them, now). ``deadline`` is a :func:`time.monotonic` value.

    Safe to run beside the webhook and other relays: notices are locked while delivered.
    """
    verification = verify_pending(retry_now=retry_now, deadline=deadline)
    linked, anomalies = processor.link_waiting_refunds()
    report = dispatch.deliver(linked)
    due = dispatch.deliver_due(retry_now=retry_now, deadline=deadline)
    backlog = dispatch.backlog()
    return PendingReport(
        linked=len(linked),
        delivered=report.delivered + due.delivered,
        late=due.delivered,
        failed=report.failed + due.failed,
        pending=backlog.pending,
        oldest_pending_seconds=round(backlog.oldest_age().total_seconds(), 3),
        anomalies=len(anomalies),
        verification=verification.as_dict(),
    )


# --- deliveries pending verification (the relay) --------------------------------------------------------


@dataclass
class VerificationReport:
    """What :func:`verify_pending` did, and the pending deliveries it left."""

    settled: dict[str, int]  # deliveries settled, by the outcome of the delivery that settled them
    still_pending: int = 0  # asked again, and ATH Móvil still could not answer
    applied_unverified: int = 0  # applied without ATH's answer (ATHM_APPLY_UNVERIFIED_AFTER)
    unverified_payments: int = 0  # payments or refunds kept unverified: ATH never confirmed them
    anomalies: int = 0  # money that cannot be right, recorded by the deliveries that settled them
    pending: int = 0  # pending deliveries afterwards
    oldest_pending_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pending_verification():
    """The deliveries kept ``pending`` and not settled yet, oldest first."""
    return WebhookEvent.objects.filter(outcome=Outcome.PENDING, settled_by=None, verify_after__isnull=False)


def verify_pending(
    *, retry_now: bool = False, deadline: float | None = None, batch: int = 100
) -> VerificationReport:
    """Verify again the pending deliveries that are due (``retry_now``: all of them), up to ``batch``.

    Each is booked for its next try before ATH Móvil is asked, so a relay that dies or hangs on it does not
    take it first again at once. ``deadline`` is a :func:`time.monotonic` value. Safe beside the webhook and
    other relays: a delivery is taken under a row lock, and processing is idempotent.
    """
    report = VerificationReport(settled={})
    due = pending_verification()
    if not retry_now:
        due = due.filter(verify_after__lte=timezone.now())
    if not athm_settings.ATHM_VERIFY and athm_settings.ATHM_APPLY_UNVERIFIED_AFTER is None:
        # A process that cannot ask ATH Móvil (no public token) must not apply what ATH was to confirm.
        # Said only when there is something it leaves (a local `athm relay` usually has nothing pending).
        waiting = due.count()
        if waiting:
            log.error(
                "%d pending %s not verified here: ATHM_VERIFY is off in this process",
                waiting,
                "delivery is" if waiting == 1 else "deliveries are",
            )
        due = due.none()
    with one_report_call_per_day():
        for pk in list(due.order_by("verify_after", "pk").values_list("pk", flat=True)[:batch]):
            if deadline is not None and time.monotonic() >= deadline:
                break
            _verify_one(pk, report, retry_now=retry_now)
    waiting = pending_verification()
    report.pending = waiting.count()
    oldest = waiting.order_by("received_at").values_list("received_at", flat=True).first()
    if oldest is not None:
        report.oldest_pending_seconds = round((timezone.now() - oldest).total_seconds(), 3)
    return report


def _verify_one(pk: int, report: VerificationReport, *, retry_now: bool = False) -> None:
    with transaction.atomic():
        still_due = pending_verification().select_for_update(skip_locked=True).filter(pk=pk)
        if not retry_now:  # another relay may have taken it since it was listed, and booked its next try
            still_due = still_due.filter(verify_after__lte=timezone.now())
        record = still_due.first()
        if record is None:
            return  # another relay has it, or it was settled meanwhile
        record.verification_attempts += 1
        record.verify_after = next_verification(record.verification_attempts)
        record.save(update_fields=["verification_attempts", "verify_after"])
    unverified_ok = False
    try:
        try:
            if not athm_settings.ATHM_VERIFY:  # this process cannot ask ATH: only the deadline may apply it
                raise Unavailable("verification is off in this process")
            delivery = _receive_again(record, check=None)
        except NotConfirmedYet as exc:
            # ATH Móvil answers, and does not confirm it: never applied by the deadline below, now or later.
            # CONFIRMATION_DEADLINE after its first such answer it stops costing calls, kept unverified
            # (reprocessed if ATH lists it after all).
            if record.not_confirmed_at is None:
                record.not_confirmed_at = timezone.now()
                WebhookEvent.objects.filter(pk=pk).update(not_confirmed_at=record.not_confirmed_at)
            if timezone.now() - record.not_confirmed_at < CONFIRMATION_DEADLINE:
                raise
            delivery = _receive_again(
                record, check=_unconfirmed(f"{exc}, {CONFIRMATION_DEADLINE.days} days on")
            )
        except Unavailable:
            # ATH Móvil cannot answer now: after the deadline the merchant chose, applied unverified, unless
            # ATH has answered about it before without confirming it; otherwise it waits.
            if record.not_confirmed_at is not None or not _waited_long_enough(record):
                raise
            unverified_ok = True
            delivery = _receive_again(record, check=_accept_unverified)
    except Unavailable as exc:
        report.still_pending += 1
        log.info("pending delivery %s: ATH Móvil still cannot answer (%s)", pk, type(exc).__name__)
        return
    except PayloadError as exc:
        # Its amounts were to come from findPayment, which now knows no such checkout: what it is.
        invalid = processor.record(
            record.raw_body,
            Outcome.INVALID,
            error=str(exc),
            raw_bytes=record.raw_bytes,
            charset=record.charset,
            source_ip=record.source_ip,
            request_id=f"verification of #{pk}",
        )
        _settle(pk, invalid, report)
        return
    new = delivery.record
    if new is None:  # a failure the database could not record either: the next run tries again
        report.still_pending += 1
        return
    report.anomalies += len(new.anomalies) + len(getattr(new, "linked_anomalies", []))
    if delivery.outcome == Outcome.UNVERIFIED and delivery.event.type.moves_money:
        report.unverified_payments += 1
    if unverified_ok and delivery.outcome == Outcome.APPLIED:
        report.applied_unverified += 1
        waited = athm_settings.ATHM_APPLY_UNVERIFIED_AFTER
        why = f"applied without ATH Móvil's confirmation after {waited} s (ATHM_APPLY_UNVERIFIED_AFTER)"
        warning = {"field": "verification", "warning": why}
        new.warnings = [*new.warnings, warning]
        WebhookEvent.objects.filter(pk=new.pk).update(warnings=new.warnings)
    _settle(pk, new, report)


def _receive_again(record: WebhookEvent, *, check, why: str = "verification"):
    """The stored body of ``record`` through :func:`receive` again, recorded as ``"{why} of #ID"``. Raises
    what a body that cannot be read or verified raises (``keep_invalid=False``)."""
    return receive(
        record.body_bytes,
        charset=record.charset,
        source_ip=record.source_ip,
        request_id=f"{why} of #{record.pk}",
        check=check,
        keep_invalid=False,
    )


def _settle(pk: int, by: WebhookEvent, report: VerificationReport) -> None:
    report.settled[by.outcome] = report.settled.get(by.outcome, 0) + 1
    WebhookEvent.objects.filter(pk=pk).update(settled_by=by, verify_after=None)
    log.info("pending delivery %s settled by delivery %s: %s", pk, by.pk, by.outcome)


def _waited_long_enough(record: WebhookEvent) -> bool:
    after = athm_settings.ATHM_APPLY_UNVERIFIED_AFTER
    return after is not None and timezone.now() - record.received_at >= timedelta(seconds=float(after))


def _accept_unverified(event) -> None:
    return None


def _unconfirmed(reason: str):
    def check(event):
        raise Unverifiable(f"{reason}: kept unverified; `athm reprocess` applies it if ATH Móvil confirms it")

    return check


# --- reprocess -------------------------------------------------------------------------------------------


def failed_events():
    """The failed events worth reprocessing: not purged, and not settled since by a redelivery or a
    reprocess; the latest failed delivery of each event only, oldest first."""
    settled = WebhookEvent.objects.filter(outcome__in=SETTLED).exclude(idempotency_key="")
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
        delivery = _receive_again(record, check=check, why="reprocess")
    except PayloadError as exc:
        return Result(pk, REFUSED, f"its body is still not a valid event: {exc}")
    except Unavailable as exc:
        return Result(pk, REFUSED, f"it cannot be verified now ({exc}); try later")
    new = delivery.record
    if delivery.outcome == Outcome.FAILED:
        where = "the traceback is on the new event" if new else "the database could not record it"
        return Result(pk, delivery.outcome, f"{delivery.error}; {where}", new and new.pk)
    if delivery.outcome in (Outcome.REJECTED, Outcome.UNVERIFIED):
        return Result(pk, delivery.outcome, delivery.error, new.pk)
    return Result(pk, delivery.outcome, _receivers_note(new), new.pk)


def _receivers_note(record: WebhookEvent) -> str:
    if not record.receiver_errors:
        return ""
    return f"{len(record.receiver_errors)} receiver(s) raised; `athm redispatch {record.pk}` sends again"


def _pk(event: WebhookEvent | int) -> int:
    return event.pk if isinstance(event, WebhookEvent) else int(event)
