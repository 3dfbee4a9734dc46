"""The state machine: one ATH Móvil event in, payments and refunds changed once, in one transaction.

Every delivery is recorded as a :class:`~athm_core.models.WebhookEvent`. The transition it causes runs in
the same transaction, under a row lock on the payment it touches; unique constraints on the business rows
(``ecommerce_id``, ``reference_number``, a refund's ``idempotency_key``) decide between deliveries that
race to create the same row, and the loser starts again and sees a duplicate. Each state change also
writes, in that transaction, its :class:`~athm_core.models.Notice` (the signal it sends, and to which
receivers) and its outbox message (when the outbox is enabled): a committed change always has both.

Once the transaction has committed, the notices go to the receivers (:mod:`athm_core.dispatch`), refunds
that were waiting for the payment are tied to it (with notices of their own, delivered next), and
publishers hear of the new outbox messages. A redelivery of an event applied before (a duplicate) first
delivers its payment's unfinished notices. Nothing after the commit can undo it or fail the delivery: what
does not finish then (the database went away, the process died) is finished by a redelivery or the relay
(:func:`athm_core.replay.finish_pending`).

This is the only module that changes payments and refunds, and that records webhook events.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet, Sum
from django.utils import timezone

from athm_core import dispatch, outbox
from athm_core.dispatch import payment_notice, refund_notice
from athm_core.events import EventType
from athm_core.models import REQUESTED_KEY_PREFIX, Notice, OutboxMessage, Payment, Refund, WebhookEvent
from athm_core.payloads import PUERTO_RICO, AthmEvent
from athm_core.text import storable

log = logging.getLogger(__name__)

Outcome = WebhookEvent.Outcome
Status = Payment.Status

# A delivery that loses a race to create a row retries; the second attempt sees the winner's row.
_ATTEMPTS = 3


@dataclass
class Transition:
    """What an event did: the outcome, the rows it touched, and the notices (unsaved) that announce it."""

    outcome: str
    payment: Payment | None = None
    refund: Refund | None = None
    notices: list[Notice] = field(default_factory=list)
    # After commit, look for refunds that arrived before the payment with this reference number.
    link_reference: str | None = None
    # The outbox messages written with the change.
    messages: list[OutboxMessage] = field(default_factory=list)
    # Anomalies the transition itself found (a squatter evicted), beside those :func:`_anomalies` finds.
    anomalies: list[dict] = field(default_factory=list)


def process(
    event: AthmEvent,
    *,
    raw_body: str,
    raw_bytes: bytes | None = None,
    charset: str = "",
    source_ip: str | None = None,
    request_id: str = "",
) -> WebhookEvent:
    """Record one delivery of ``event`` and apply it. Returns the recorded delivery with its outcome.

    ``raw_body`` is the body as text, ``raw_bytes`` its exact bytes where they are not that text's UTF-8,
    ``charset`` the charset its request declared (see ``WebhookEvent``); the event's warnings are recorded.

    Safe to call for the same event any number of times, from any number of processes at once.
    Signals fire after the transaction commits (after the caller's, if the caller holds one); what became
    of them is on the returned record's ``dispatch_report`` (a :class:`athm_core.dispatch.Report`) once
    they have run. Raises what the database raises before the commit (nothing was written then, or, when
    the commit's answer was lost, it is not known whether it was: a redelivery finishes the job either way).
    """
    kept = {
        "raw_body": raw_body,
        "raw_bytes": raw_bytes,
        "charset": charset,
        "source_ip": source_ip,
        "request_id": request_id,
    }
    caller_transaction = connection.in_atomic_block
    evicted: list[dict] = []  # a confirmed event took its reference number back from an unconfirmed payment
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            with transaction.atomic():
                result = _TRANSITIONS[event.type](event)
                contradiction = _contradicts_confirmed(event, result)
                if contradiction:
                    # Not a redelivery: an unconfirmed claim against what ATH Móvil confirmed. Kept, not
                    # flagged on the confirmed payment.
                    result = Transition(Outcome.REJECTED, result.payment)
                anomalies = [] if contradiction else evicted + result.anomalies + _anomalies(event, result)
                record = _record(
                    outcome=result.outcome,
                    event=event,
                    payment=result.payment,
                    refund=result.refund,
                    anomalies=anomalies,
                    error=contradiction,
                    **kept,
                )
                if anomalies:
                    _flag(result.payment, anomalies, event.type)
                _write_notices(result.notices, record)
                occurred_at = event.effective_date or record.received_at
                result.messages = _write_outbox(result.notices, record, occurred_at=occurred_at)
            break
        except IntegrityError:
            if attempt < _ATTEMPTS and not evicted and (eviction := _evict_squatter(event)):
                evicted.append(eviction)
                continue  # the next attempt records the confirmed payment under its reference number
            try:
                joined = attempt < _ATTEMPTS and _join_checkout(event)
            except OperationalError as exc:
                if not _is_deadlock(exc) or caller_transaction:
                    raise
                joined = True  # rolled back whole: the next attempt looks again
            if joined:
                continue  # the next attempt finds the joined payment by its ecommerceId
            conflict = _reference_conflict(event)
            if conflict:
                # Not a race: the event names a transaction that is another payment's. Kept, not applied.
                log.warning("event %s rejected: %s", event.idempotency_key, conflict)
                return _record(outcome=Outcome.REJECTED, event=event, error=conflict, **kept)
            if attempt == _ATTEMPTS:
                raise
            log.info("event %s lost a race to create its row; trying again", event.idempotency_key)
        except OperationalError as exc:
            # Concurrent deliveries of one new checkout can deadlock on MySQL/MariaDB (an insert's unique
            # check against another's locking read): the database rolled this one back whole, so it can
            # start again, unless a caller's transaction was rolled back with it.
            if not _is_deadlock(exc) or caller_transaction or attempt == _ATTEMPTS:
                raise
            log.info("event %s was chosen as a deadlock's victim; trying again", event.idempotency_key)
    transaction.on_commit(partial(_after_commit, record, result))
    return record


def record(
    raw_body: str,
    outcome: str,
    *,
    event: AthmEvent | None = None,
    error: str = "",
    raw_bytes: bytes | None = None,
    charset: str = "",
    source_ip: str | None = None,
    request_id: str = "",
    verify_after: datetime | None = None,
    not_confirmed_at: datetime | None = None,
) -> WebhookEvent:
    """Keep a delivery that changes nothing, with ``outcome`` and why (``error``).

    For a body that could not be read (``invalid``), one that ATH Móvil contradicts (``rejected``) or
    cannot confirm (``unverified``), one it could not be asked about yet (``pending``, verified again from
    ``verify_after``; ``not_confirmed_at`` when ATH answered without confirming it), and one whose
    processing failed (``failed``, with the traceback), so that each can be looked at and replayed. The
    body's arguments are :func:`process`'s.
    """
    return _record(
        raw_body,
        outcome,
        event=event,
        error=error,
        raw_bytes=raw_bytes,
        charset=charset,
        source_ip=source_ip,
        request_id=request_id,
        verify_after=verify_after,
        not_confirmed_at=not_confirmed_at,
    )


def already_applied(event: AthmEvent) -> bool:
    """Whether a delivery of ``event`` has been applied before (so this one can only be a duplicate)."""
    return WebhookEvent.objects.filter(
        idempotency_key=event.idempotency_key, outcome=Outcome.APPLIED
    ).exists()


# What :func:`applied_state` says of an event.
NEVER_APPLIED = "never applied"
CONFIRMED = "confirmed"  # applied to a payment ATH Móvil confirmed, which agrees with this delivery
UNCONFIRMED = "unconfirmed"  # applied to a payment ATH Móvil has not confirmed
CONTRADICTED = "contradicted"  # applied to a confirmed payment with another total, reference or metadata


def applied_state(event: AthmEvent) -> str:
    """Whether a delivery of ``event`` has been applied, and to what: one of the states above, in one
    query (like :func:`already_applied`). A refund that was applied is ``CONFIRMED``: a redelivery of it
    changes nothing whatever it says."""
    applied = WebhookEvent.objects.filter(idempotency_key=event.idempotency_key, outcome=Outcome.APPLIED)
    payment = ("total", "reference_number", "metadata_1", "metadata_2")
    rows = list(
        applied.order_by().values_list("payment__verified_at", *(f"payment__{name}" for name in payment))
    )
    if event.type == EventType.REFUND_SENT:
        return CONFIRMED if rows or same_refund(event) is not None else NEVER_APPLIED
    if not rows:
        return NEVER_APPLIED
    confirmed = [dict(zip(payment, row[1:], strict=True)) for row in rows if row[0] is not None]
    if not confirmed:
        return UNCONFIRMED
    agrees = any(
        recorded["total"] == event.total
        and (not event.reference_number or recorded["reference_number"] == event.reference_number)
        and all(not getattr(event, name) or recorded[name] == getattr(event, name) for name in payment[2:])
        for recorded in confirmed
    )
    return CONFIRMED if agrees else CONTRADICTED


def _record(
    raw_body: str,
    outcome: str,
    *,
    event: AthmEvent | None = None,
    error: str = "",
    raw_bytes: bytes | None = None,
    charset: str = "",
    source_ip: str | None = None,
    request_id: str = "",
    payment: Payment | None = None,
    refund: Refund | None = None,
    verify_after: datetime | None = None,
    not_confirmed_at: datetime | None = None,
    anomalies: list[dict] | None = None,
) -> WebhookEvent:
    return WebhookEvent.objects.create(
        verify_after=verify_after,
        not_confirmed_at=not_confirmed_at,
        anomalies=anomalies or [],
        received_at=timezone.now(),
        request_id=request_id,
        source_ip=source_ip,
        raw_body=raw_body,
        raw_bytes=raw_bytes,
        charset=charset[:40],
        warnings=[warning.as_json() for warning in event.warnings] if event else [],
        event_type=event.type if event else "",
        idempotency_key=event.idempotency_key if event else "",
        outcome=outcome,
        # A traceback or a reason can quote anything, NUL included.
        error=storable(error),
        payment=payment,
        refund=refund,
    )


# --- transitions: one per event type, each inside the caller's transaction --------------------------


def _complete_ecommerce(event: AthmEvent) -> Transition:
    payment = _checkout(event)
    anomalies = []
    if payment is None:
        payment = _new_checkout(event)
    elif payment.status == Status.COMPLETED:
        if not _corrected(event, payment):
            _confirm_recorded(payment, event)
            return Transition(Outcome.DUPLICATE, payment, link_reference=payment.reference_number)
        # Recorded unconfirmed (before verification, or by the deadline) otherwise than ATH confirms it:
        # rewritten from ATH's answer below, and announced again.
        anomalies.append(_anomaly("corrected_from_ath", _corrections(payment, event)))
    elif payment.status == Status.OPEN:
        # The checkout the business recorded when it started it: what it asked for.
        asked = _asked_otherwise(payment, event)
        if asked:
            anomalies.append(_anomaly("completed_otherwise_than_asked", asked))
    elif event.ecommerce_id and event.reference_number:
        # The checkout was cancelled or expired under its ecommerceId, and its completion may have been
        # recorded apart, from ATH's published shape (no ecommerceId), under this reference number: the
        # money is there already, and its receivers have heard of it.
        completed = _unjoined_checkout(event.reference_number)
        if completed is not None and completed.status == Status.COMPLETED:
            return Transition(Outcome.DUPLICATE, completed, link_reference=completed.reference_number)
    # Money moved: a completion wins over an earlier cancellation or expiry.
    _fill(payment, event)
    payment.status = Status.COMPLETED
    payment.save()
    return Transition(
        Outcome.APPLIED,
        payment,
        notices=[payment_notice(event.type, payment)],
        link_reference=payment.reference_number,
        anomalies=anomalies,
    )


def _close_ecommerce(event: AthmEvent, status: str) -> Transition:
    payment = _checkout(event)
    if payment is None:
        payment = _new_checkout(event)
        _fill(payment, event)
    elif payment.status == status:
        return Transition(Outcome.DUPLICATE, payment)
    elif payment.status != Status.OPEN:
        # A completed payment stays completed; the first of cancelled and expired stands.
        return Transition(Outcome.IGNORED, payment)
    payment.status = status
    payment.save()
    return Transition(Outcome.APPLIED, payment, notices=[payment_notice(event.type, payment)])


def _checkout(event: AthmEvent) -> Payment | None:
    """The (locked) payment of an eCommerce event's checkout, found by what the event names.

    By ``ecommerceId`` where it has one; else (ATH Móvil's published shape) by its reference number, or
    for a cancelled or expired checkout in that shape by its fingerprint. (A payment recorded from that
    shape and an event that names both its reference number and an ``ecommerceId`` are joined when the
    new payment's reference number collides with it: :func:`_join_checkout`.)
    """
    if event.ecommerce_id:
        return _locked_payment(ecommerce_id=event.ecommerce_id)
    if event.reference_number:
        payment = _locked_payment(reference_number=event.reference_number)
        if payment is not None and payment.transaction_type == Payment.TransactionType.ECOMMERCE:
            return payment
        return None  # another kind of payment holds the number: the unique constraint says so
    return _locked_payment(fingerprint=event.fingerprint)


def _join_checkout(event: AthmEvent) -> bool:
    """Give the ``ecommerceId`` of ``event`` to the checkout payment recorded without one under its reference
    number (from ATH Móvil's published shape); whether there was one to join.

    Asked only when the event's new payment collided on its reference number: every new checkout would
    otherwise pay for a second lookup, which a join needs once in a payment's life.
    """
    if not (event.type.is_ecommerce and event.ecommerce_id and event.reference_number):
        return False
    try:
        with transaction.atomic():
            payment = _unjoined_checkout(event.reference_number)
            if payment is None:
                return False
            payment.ecommerce_id = event.ecommerce_id
            payment.save(update_fields=["ecommerce_id", "updated_at"])
    except IntegrityError:  # another payment holds the ecommerceId: two rows of one checkout, left apart
        return False
    log.info("payment %s joined to ecommerceId %s", payment.pk, event.ecommerce_id)
    return True


def _unjoined_checkout(reference_number: str) -> Payment | None:
    """The (locked) checkout payment recorded without an ecommerceId under this reference number."""
    payment = _locked_payment(reference_number=reference_number)
    if payment is None or payment.transaction_type != Payment.TransactionType.ECOMMERCE:
        return None
    return payment if payment.ecommerce_id is None else None


def _new_checkout(event: AthmEvent) -> Payment:
    return Payment(
        transaction_type=Payment.TransactionType.ECOMMERCE,
        ecommerce_id=event.ecommerce_id,
        fingerprint=event.fingerprint,
    )


def _receive_payment(event: AthmEvent, transaction_type: str) -> Transition:
    payment = _one(Payment.objects.filter(reference_number=event.reference_number))
    anomalies = []
    if payment is not None and event.verified_at is not None and payment.verified_at is None:
        # ATH confirms the event: it may take the number back, under the holder's row lock.
        payment = _locked_payment(reference_number=event.reference_number)
    if payment is not None:
        if not _corrected(event, payment):
            _confirm_recorded(payment, event)
            return Transition(Outcome.DUPLICATE, payment, link_reference=payment.reference_number)
        if payment.transaction_type != transaction_type:
            anomalies.append(_evict(payment, event))  # another kind of transaction held the number
            payment = None
        else:  # this transaction, recorded unconfirmed otherwise than ATH confirms it: rewritten
            anomalies.append(_anomaly("corrected_from_ath", _corrections(payment, event)))
    if payment is None:
        payment = Payment(transaction_type=transaction_type, status=Status.COMPLETED)
    _fill(payment, event)
    payment.save()
    return Transition(
        Outcome.APPLIED,
        payment,
        notices=[payment_notice(event.type, payment)],
        link_reference=payment.reference_number,
        anomalies=anomalies,
    )


def _send_refund(event: AthmEvent) -> Transition:
    refund = same_refund(event)
    if refund is not None and refund.claimed:
        _learn_own_number(refund, event)
        waiting = event.reference_number if refund.payment is None else None
        return Transition(Outcome.DUPLICATE, refund.payment, refund, link_reference=waiting)
    # A refund asked for here that this delivery is the first to report (found by its daily id above, or
    # by :func:`requested_refund`'s rules).
    requested = refund or requested_refund(event)
    if requested is not None:
        transition = _claim_requested(requested.pk, event)
        if transition is not None:
            return transition
    payment = _locked_payment(reference_number=event.reference_number)
    if payment is not None:
        # A copy of this refund under another key (the webhook and the report's row) may have committed
        # while this delivery waited for the payment's lock: it is the same refund.
        again = same_refund(event)
        if again is not None and again.claimed and again.status == Refund.Status.COMPLETED:
            return Transition(Outcome.DUPLICATE, again.payment, again)
    refund = Refund.objects.create(
        payment=payment,
        linked_at=timezone.now() if payment else None,
        reference_number=event.reference_number,
        daily_transaction_id=event.daily_transaction_id,
        amount=event.total,
        transaction_date=event.effective_date,
        name=event.name,
        phone_number=event.phone_number,
        email=event.email,
        message=event.message,
        idempotency_key=event.idempotency_key,
    )
    if payment is None:
        # Kept, never dropped: linked when a payment with this reference number arrives.
        return Transition(Outcome.APPLIED, None, refund, link_reference=event.reference_number)
    _add_refunds(payment, [refund])
    return Transition(
        Outcome.APPLIED,
        payment,
        refund,
        notices=[refund_notice(refund, payment)],
    )


# --- refunds this system asks ATH Móvil for (athm_core.refunds) -------------------------------------------


def _learn_own_number(refund: Refund, event: AthmEvent) -> None:
    """A copy of a refund asked for here that names another number than its payment's names the refund's
    own: kept, when no answer of ATH's gave it and ATH confirmed the copy, so that later copies naming it
    find the refund."""
    if (
        event.verified_at is not None
        and refund.requested_at is not None
        and not refund.refund_reference_number
        and refund.payment is not None
        and event.reference_number != refund.payment.reference_number
    ):
        Refund.objects.filter(pk=refund.pk, refund_reference_number="").update(
            refund_reference_number=event.reference_number
        )


# How far from the moment a refund was asked for ATH Móvil's date for it may be: before, a clock's drift;
# after, ATH's slowest answer and then some. A Refund Sent dated outside is another refund.
ASKED_BEFORE = timedelta(minutes=10)
ASKED_AFTER = timedelta(hours=1)
# How far from the date in ATH's answer a delivery naming the payment may be dated, when that answer gave no
# daily id to tell the refund by.
ANSWERED_WITHIN = timedelta(minutes=2)


def requested_refund(event: AthmEvent) -> Refund | None:
    """The refund this system asked for that a Refund Sent event (webhook or report row) reports, or
    ``None``: one of the event's amount, pending or completed by ATH's answer, not yet matched to a delivery.

    In this order, each stricter than a guess:

    1. the one ATH's answer named by the event's reference number (a refund's own number is unique);
    2. one of the payment the event names, unless it cannot be that refund: ATH's answer gave it another
       daily transaction id, or the event is dated outside the hour around the request (or, when the
       answer gave no daily id, more than two minutes from the answer's date) (the oldest);
    3. for a reference number nothing here knows (the refund's own, named by ATH's answer that never
       came): the one refund still pending with no answer of that amount, asked for around the event's date,
       whose payment's customer is the event's (phone digits, where both have them); none when two could
       be, so that nothing is guessed between them (the event is then kept unlinked, and the answer or
       ``athm refund --check`` ties it).

    A request is refused while another of its payment is pending (:func:`request_refund`), so that 2. and
    3. never have two of one payment to choose from.
    """
    if event.type != EventType.REFUND_SENT or not event.reference_number:
        return None
    ours = Refund.objects.select_related("payment").filter(
        idempotency_key__startswith=REQUESTED_KEY_PREFIX,
        status__in=[Refund.Status.PENDING, Refund.Status.COMPLETED],
        amount=event.total,
    )
    by_own_number = _one(ours.filter(refund_reference_number=event.reference_number))
    if by_own_number is not None:
        return by_own_number
    of_payment = ours.filter(payment__reference_number=event.reference_number).order_by("requested_at", "pk")
    for refund in of_payment:
        if _could_be(refund, event):
            return refund
    if (
        Payment.objects.filter(reference_number=event.reference_number).exists()
        or Refund.objects.filter(refund_reference_number=event.reference_number).exists()
    ):
        return None
    unanswered = [
        refund
        for refund in ours.filter(status=Refund.Status.PENDING, refund_reference_number="")
        if _could_be(refund, event) and _same_customer(refund.payment, event)
    ]
    return unanswered[0] if len(unanswered) == 1 else None


def _could_be(refund: Refund, event: AthmEvent) -> bool:
    """Whether ``event`` can report the refund asked for: no other daily id than ATH's answer gave it, and
    dated around the request; when ATH's answer gave no daily id, dated within minutes of the answer's own
    date (otherwise an app refund of the same amount soon after could pass for it)."""
    daily = event.daily_transaction_id
    if daily is not None and refund.daily_transaction_id is not None and daily != refund.daily_transaction_id:
        return False
    when = event.effective_date
    if when is None:
        return True
    if refund.refund_reference_number and refund.daily_transaction_id is None:
        return abs(when - refund.transaction_date) <= ANSWERED_WITHIN
    return refund.requested_at - ASKED_BEFORE <= when <= refund.requested_at + ASKED_AFTER


def _is_copy(refund: Refund, event: AthmEvent) -> bool:
    """Whether ``event`` reports the refund asked for that another delivery has matched already: it names
    the refund's own number (from ATH's answer or that delivery), or the same daily id on the same day."""
    if refund.refund_reference_number and event.reference_number == refund.refund_reference_number:
        return True
    when = event.effective_date
    return (
        event.daily_transaction_id is not None
        and event.daily_transaction_id == refund.daily_transaction_id
        and when is not None
        and when.astimezone(PUERTO_RICO).date() == refund.transaction_date.astimezone(PUERTO_RICO).date()
    )


def _same_customer(payment: Payment | None, event: AthmEvent) -> bool:
    return not (payment and payment.phone_number and event.phone_number) or (
        payment.phone_number[-10:] == event.phone_number[-10:]
    )


def _claim_requested(pk: int, event: AthmEvent) -> Transition | None:
    """Match a Refund Sent ``event`` to the refund ``pk`` this system asked for: the refund takes the event's
    key (its redeliveries are duplicates) and details; a pending one is completed, with its ``refund_sent``;
    one that ATH's answer completed already makes this delivery a duplicate, and so does one that another
    delivery naming the same refund matched first. ``None`` when another delivery, of another refund,
    matched it first, or it failed (the caller records the event as a refund of its own)."""
    payment_id = Refund.objects.filter(pk=pk).values_list("payment_id", flat=True).first()
    payment = _locked_payment(pk=payment_id)  # the payment before the refund, as everywhere
    refund = _one(Refund.objects.select_for_update().filter(pk=pk))
    if payment is None or refund is None or refund.status == Refund.Status.FAILED:
        return None
    if refund.claimed:
        # Another delivery matched it while this one waited for the lock: the same refund named otherwise
        # (a duplicate), or another refund.
        return Transition(Outcome.DUPLICATE, payment, refund) if _is_copy(refund, event) else None
    refund.idempotency_key = event.idempotency_key
    refund.daily_transaction_id = event.daily_transaction_id or refund.daily_transaction_id
    # The number ATH's deliveries name it by (its copies, the report's row find it by that).
    refund.reference_number = event.reference_number
    if event.reference_number != payment.reference_number:
        refund.refund_reference_number = event.reference_number  # the refund's own
    if refund.status == Refund.Status.COMPLETED:
        # ATH's answer completed it: this delivery changes no money, and, unverified, not its customer.
        if event.verified_at is not None:
            _fill_customer(refund, event)
        refund.save()
        return Transition(Outcome.DUPLICATE, payment, refund)
    _fill_customer(refund, event)
    if event.effective_date is not None:
        refund.transaction_date = event.effective_date
    refund.status = Refund.Status.COMPLETED
    refund.error = ""
    refund.save()
    _add_refunds(payment, [refund])
    return Transition(Outcome.APPLIED, payment, refund, notices=[refund_notice(refund, payment)])


def _fill_customer(refund: Refund, event: AthmEvent) -> None:
    for name in ("name", "phone_number", "email"):
        setattr(refund, name, getattr(refund, name) or getattr(event, name))


def refundable(payment: Payment) -> Decimal:
    """What can still be refunded of ``payment``: its total less the refunds completed and those pending."""
    pending = Refund.objects.filter(payment=payment, status=Refund.Status.PENDING)
    return payment.refundable_amount - (pending.aggregate(sum=Sum("amount"))["sum"] or Decimal("0.00"))


def request_refund(payment_pk: int, amount: Decimal | None, message: str) -> tuple[Refund | None, str]:
    """Write a pending refund of ``amount`` (``None``: all that is refundable) of the payment ``payment_pk``,
    before ATH Móvil is asked for it; returns it, or ``(None, why not)`` with nothing written.

    The payment's row is locked while what is refundable is computed and the refund written, so that two
    requests at once cannot both take the last of it."""
    with transaction.atomic():
        payment = _locked_payment(pk=payment_pk)
        if payment is None:
            return None, f"payment {payment_pk} does not exist"
        if payment.status != Status.COMPLETED:
            return None, f"payment {payment} is {payment.status}: only a completed payment can be refunded"
        if not payment.reference_number:
            return None, f"payment {payment} has no reference number to refund"
        unanswered = _one(Refund.objects.filter(payment=payment, status=Refund.Status.PENDING))
        if unanswered is not None:
            # Two refunds of one payment and amount, both unanswered, could not be told apart by ATH's
            # deliveries: one at a time.
            return None, (
                f"refund {unanswered.pk} of {unanswered.amount} is still pending at ATH Móvil (asked "
                f"{unanswered.requested_at.astimezone(PUERTO_RICO):%Y-%m-%d %H:%M} Puerto Rico time, not "
                f"answered yet): one refund of a payment at a time; if it stays pending, settle it with "
                f"`athm refund --check {unanswered.pk}`"
            )
        left = refundable(payment)
        amount = left if amount is None else amount
        if amount <= 0:
            pending = " (counting refunds pending)" if left != payment.refundable_amount else ""
            return None, f"payment {payment} has nothing left to refund{pending}: refundable {left}"
        if amount > left:
            return None, (
                f"{amount} is more than the {left} still refundable of payment {payment} "
                f"(total {payment.total}, refunded {payment.total_refunded_amount}, "
                f"pending {payment.refundable_amount - left})"
            )
        now = timezone.now()
        refund = Refund.objects.create(
            payment=payment,
            linked_at=now,
            reference_number=payment.reference_number,
            amount=amount,
            transaction_date=now,
            message=message,
            idempotency_key=f"{REQUESTED_KEY_PREFIX}{uuid.uuid4().hex}",
            status=Refund.Status.PENDING,
            requested_at=now,
        )
    log.info("refund %s of %s of payment %s requested", refund.pk, amount, payment.pk)
    return refund, ""


def complete_requested_refund(
    pk: int,
    *,
    reference_number: str = "",
    original_reference_number: str = "",
    amount: Decimal | None = None,
    daily_transaction_id: int | None = None,
    transaction_date: datetime | None = None,
) -> Refund:
    """Record ATH Móvil's answer to a refund this system asked for: the refund's own reference number, the
    original transaction's, the amount ATH says it refunded; and, if no delivery completed it first,
    complete it with its ``refund_sent`` (delivered after the commit). Returns the refund.

    A delivery of ATH's may have come first and been recorded as a refund of its own: under the refund's
    own reference number (kept unlinked, since it could not be told whose it was), or under the payment's
    with the daily id the answer gives (another amount than the one asked for). That refund is this one:
    the answer's facts go onto it, it is tied to the payment if it was not (with its ``refund_sent``), and
    the pending row goes, so that the refund is counted and announced once; it is the one returned. An
    amount other than the one asked for is recorded as ATH's (it is what moved) and flagged
    ``refund_amount_differs``; an original transaction other than the payment's is flagged
    ``refund_of_other_transaction``, and a refund number ATH gave another refund already
    ``refund_number_reused``; the returned refund's ``flagged`` lists what was flagged (``[{"kind",
    "detail"}]``), for the caller to say. A refund marked failed by hand (``athm refund --fail``) that
    ATH answers after all was made: it is completed like a pending one.
    """
    notices: list[Notice] = []
    messages: list[OutboxMessage] = []
    with transaction.atomic():
        payment_id = Refund.objects.filter(pk=pk).values_list("payment_id", flat=True).get()
        payment = _locked_payment(pk=payment_id)
        refund = Refund.objects.select_for_update().get(pk=pk)
        asked = refund.amount
        refund.refund_reference_number = reference_number or refund.refund_reference_number
        refund.original_reference_number = original_reference_number or refund.original_reference_number
        if daily_transaction_id is not None and refund.daily_transaction_id is None:
            refund.daily_transaction_id = daily_transaction_id
        if refund.status == Refund.Status.COMPLETED:
            refund.save()
        else:
            if refund.status == Refund.Status.FAILED:
                log.warning("refund %s was marked failed, and ATH Móvil answers it was made", refund.pk)
            if amount is not None:
                refund.amount = amount
            twin = _recorded_twin(refund, payment, transaction_date or timezone.now())
            if twin is not None:
                notices = _fold_into(twin, refund, payment)
                refund = twin
            else:
                refund.status = Refund.Status.COMPLETED
                refund.error = ""
                if transaction_date is not None:
                    refund.transaction_date = transaction_date
                refund.save()
                _add_refunds(payment, [refund])
                notices = [refund_notice(refund, payment)]
                _write_notices(notices, None)
            messages = _write_outbox(notices, None, occurred_at=refund.transaction_date)
        anomalies = _answer_anomalies(refund, payment, asked, amount, original_reference_number)
        if notices:
            anomalies += _refund_anomalies(payment, [refund])
        if anomalies:
            _flag(payment, anomalies, EventType.REFUND_SENT)
    transaction.on_commit(partial(_deliver_after_commit, notices, messages))
    refund.flagged = anomalies
    return refund


def _answer_anomalies(
    refund: Refund, payment: Payment, asked: Decimal, amount: Decimal | None, original_reference_number: str
) -> list[dict]:
    found = []
    if amount is not None and amount != asked:
        found.append(
            _anomaly(
                "refund_amount_differs", f"refund {refund.pk}: asked for {asked}, ATH Móvil answered {amount}"
            )
        )
    number = refund.refund_reference_number
    if number and Refund.objects.filter(refund_reference_number=number).exclude(pk=refund.pk).exists():
        found.append(
            _anomaly(
                "refund_number_reused",
                f"refund {refund.pk}: ATH Móvil's answer names refund number {number}, which it gave another "
                "refund already",
            )
        )
    if original_reference_number and original_reference_number != payment.reference_number:
        found.append(
            _anomaly(
                "refund_of_other_transaction",
                f"refund {refund.pk}: ATH Móvil's answer names original transaction "
                f"{original_reference_number}, not this payment's {payment.reference_number}",
            )
        )
    return found


def _recorded_twin(refund: Refund, payment: Payment, answered_on: datetime) -> Refund | None:
    """The refund a delivery of ATH's recorded for the (locked) pending ``refund`` before ATH's answer came,
    if any, locked: heard of only (not asked for here), of the answered amount, recorded since the request,
    unlinked or of this payment, under the refund's own number from the answer, or of this payment with the
    answer's daily id on the answer's Puerto Rico day (``answered_on``): each unique at ATH, never another
    refund."""
    same = Q()
    if refund.refund_reference_number:
        same |= Q(reference_number=refund.refund_reference_number)
    if refund.daily_transaction_id is not None:
        day = answered_on.astimezone(PUERTO_RICO).replace(hour=0, minute=0, second=0, microsecond=0)
        same |= Q(
            payment=payment,
            daily_transaction_id=refund.daily_transaction_id,
            transaction_date__gte=day,
            transaction_date__lt=day + timedelta(days=1),
        )
    if not same:
        return None
    return _one(
        Refund.objects.select_for_update()
        .filter(same, requested_at__isnull=True, amount=refund.amount)
        .filter(Q(payment__isnull=True) | Q(payment=payment))
        .filter(created_at__gte=refund.requested_at - ASKED_BEFORE)
    )


def _fold_into(twin: Refund, pending: Refund, payment: Payment) -> list[Notice]:
    """Make ``twin`` (recorded from ATH's delivery) the refund asked for as ``pending`` (both locked): the
    request's facts go onto it, ``pending`` goes (nothing points to it: no delivery, no notice). An unlinked
    twin is tied to the payment and counted; returns its notice (written), none for a twin already counted
    and announced."""
    twin.requested_at = pending.requested_at
    twin.refund_reference_number = pending.refund_reference_number or twin.refund_reference_number
    twin.original_reference_number = pending.original_reference_number
    twin.message = twin.message or pending.message
    twin.daily_transaction_id = twin.daily_transaction_id or pending.daily_transaction_id
    twin.status = Refund.Status.COMPLETED
    log.info("refund %s: ATH Móvil's answer names refund %s, recorded from its delivery", pending.pk, twin.pk)
    pending.delete()
    if twin.payment_id is not None:
        twin.save()
        return []
    twin.payment = payment
    twin.linked_at = timezone.now()
    twin.save()
    _add_refunds(payment, [twin])
    notices = [refund_notice(twin, payment)]
    delivery = WebhookEvent.objects.filter(refund=twin, outcome=Outcome.APPLIED).values_list("pk", flat=True)
    for notice in notices:
        notice.webhook_event_id = next(iter(delivery), None)
    _write_notices(notices, None)
    return notices


def fail_requested_refund(pk: int, error: str) -> Refund:
    """Mark a pending refund that ATH Móvil refused ``failed``, with why; nothing else changes."""
    with transaction.atomic():
        refund = Refund.objects.select_for_update().get(pk=pk)
        if refund.status == Refund.Status.PENDING:
            refund.status = Refund.Status.FAILED
        refund.error = storable(error)
        refund.save(update_fields=["status", "error"])
    return refund


def not_pending_request(pk: int, refund: Refund | None) -> str:
    """Why the refund ``pk`` (``refund``, as read) is not a pending refund asked for here, or ``""``."""
    if refund is None:
        return f"refund {pk} does not exist"
    if refund.requested_at is None:
        return f"refund {pk} was not asked for here: ATH Móvil reported it, so it happened"
    if refund.status != Refund.Status.PENDING:
        return f"refund {pk} is {refund.status}, not pending"
    return ""


def abandon_requested_refund(pk: int, reason: str) -> Refund:
    """Mark a pending refund this system asked for ``failed`` by hand, when ATH Móvil shows that it never
    happened (ATH Business lists no such refund, or the request was turned away before ATH's servers):
    what it held back is refundable again. Raises ``ValueError`` for a refund that is not pending, or was
    not asked for here."""
    with transaction.atomic():
        refund = _one(Refund.objects.select_for_update().filter(pk=pk))
        why_not = not_pending_request(pk, refund)
        if why_not:
            raise ValueError(why_not)
        refund.status = Refund.Status.FAILED
        refund.error = storable(f"marked failed by hand: {reason}".strip())
        refund.save(update_fields=["status", "error"])
    log.warning("refund %s of payment %s marked failed by hand", refund.pk, refund.payment_id)
    return refund


def note_pending_refund(pk: int, error: str) -> None:
    """Say on a refund still pending why (no answer from ATH Móvil), for the admin and ``athm refund``."""
    Refund.objects.filter(pk=pk, status=Refund.Status.PENDING).update(error=storable(error))


def _deliver_after_commit(notices: list[Notice], messages: list[OutboxMessage]) -> None:
    try:
        dispatch.deliver(notices)
    except Exception as exc:
        # Committed with its notices: the relay finishes what did not.
        log.warning("refund notices: %s after the commit; the relay will finish them", type(exc).__name__)
    if messages:
        outbox.notify_publishers(outbox.groups_of(messages))


# --- anomalies: money that cannot be right, recorded as ATH Móvil sent it (it moved at ATH) and flagged ---

# Each kind of anomaly, and what it means.
ANOMALIES = {
    "over_refund": "refunds recorded against the payment add up to more than its total",
    "refund_of_uncompleted_payment": "a refund of a payment that never completed (cancelled, expired)",
    "conflicting_redelivery": "another delivery of a recorded transaction with another total or reference",
    "zero_total": "a payment whose total is 0.00",
    "fee_above_total": "a payment whose fee is above its total",
    "reference_conflict": "an unconfirmed payment held the reference number of a confirmed other kind",
    "corrected_from_ath": "a payment recorded unconfirmed differed from what ATH Móvil confirms; rewritten",
    "completed_otherwise_than_asked": "a checkout completed with another total or metadata than opened with",
    "refund_amount_differs": "ATH Móvil's answer to a refund asked for here names another amount (recorded)",
    "refund_of_other_transaction": "ATH Móvil's answer to a refund asked for here names another payment",
    "refund_number_reused": "ATH Móvil's answer to a refund asked for here names another refund's number",
}


def _anomalies(event: AthmEvent, result: Transition) -> list[dict]:
    """What ``event`` and its transition recorded that cannot be right: ``[{"kind", "detail"}]``."""
    payment = result.payment
    if payment is None or not event.type.moves_money:
        return []
    found = []
    if event.type == EventType.REFUND_SENT:
        if result.outcome == Outcome.APPLIED and result.refund is not None:
            found += _refund_anomalies(payment, [result.refund])
        return found
    if result.outcome == Outcome.DUPLICATE:
        said = _conflict(event, payment)
        if said:
            found.append(
                _anomaly(
                    "conflicting_redelivery", f"{said}; the payment recorded stands (total {payment.total})"
                )
            )
    elif result.outcome == Outcome.APPLIED:
        if payment.total == 0:
            found.append(_anomaly("zero_total", "total 0.00"))
        if payment.fee is not None and payment.fee > payment.total:
            found.append(_anomaly("fee_above_total", f"fee {payment.fee} above total {payment.total}"))
    return found


def _conflict(event: AthmEvent, payment: Payment) -> str:
    """What a delivery of a recorded transaction says otherwise than its payment (total, reference number),
    or ``""``."""
    other_reference = event.reference_number and event.reference_number != payment.reference_number
    if event.total == payment.total and not other_reference:
        return ""
    return f"total {event.total}" + (
        f", reference number {event.reference_number}" if other_reference else ""
    )


def _contradicts_confirmed(event: AthmEvent, result: Transition) -> str:
    """Why an unconfirmed "redelivery" of a payment that ATH Móvil confirmed is rejected: it names another
    total or reference number (the body of an evicted squatter sent again, a forgery while verification
    cannot ask); ``""`` for anything else."""
    payment = result.payment
    if (
        result.outcome != Outcome.DUPLICATE
        or event.type == EventType.REFUND_SENT
        or event.verified_at is not None
        or payment is None
        or payment.verified_at is None
    ):
        return ""
    said = _conflict(event, payment)
    if not said:
        return ""
    return f"{said}: contradicts payment {payment.pk}, which ATH Móvil confirmed (total {payment.total})"


def _refund_anomalies(payment: Payment, refunds: list[Refund]) -> list[dict]:
    found = []
    if payment.status != Status.COMPLETED:
        found.append(
            _anomaly("refund_of_uncompleted_payment", f"refund of a payment that is {payment.status}")
        )
    if payment.total_refunded_amount > payment.total:
        found.append(
            _anomaly(
                "over_refund",
                f"{payment.total_refunded_amount} refunded of a total of {payment.total} "
                f"(refundable {payment.total - payment.total_refunded_amount})",
            )
        )
    return found


def _anomaly(kind: str, detail: str) -> dict:
    return {"kind": kind, "detail": detail}


def _flag(payment: Payment, anomalies: list[dict], event_type: str) -> None:
    """Add ``anomalies`` to the (locked) payment's, in the caller's transaction."""
    at = timezone.localtime().isoformat()
    payment.anomalies = [
        *payment.anomalies,
        *({**each, "at": at, "event_type": event_type} for each in anomalies),
    ]
    payment.save(update_fields=["anomalies", "updated_at"])
    log.warning("payment %s: %s", payment.pk, ", ".join(each["kind"] for each in anomalies))


def _simulated(event: AthmEvent) -> Transition:
    # The "test webhook" button: recorded so the business sees it arrived, never a business row.
    return Transition(Outcome.SIMULATED)


_TRANSITIONS: dict[EventType, Callable[[AthmEvent], Transition]] = {
    EventType.ECOMMERCE_COMPLETED: _complete_ecommerce,
    EventType.ECOMMERCE_CANCELLED: partial(_close_ecommerce, status=Status.CANCELLED),
    EventType.ECOMMERCE_EXPIRED: partial(_close_ecommerce, status=Status.EXPIRED),
    EventType.PAYMENT_RECEIVED: partial(_receive_payment, transaction_type=Payment.TransactionType.PAYMENT),
    EventType.DONATION_RECEIVED: partial(_receive_payment, transaction_type=Payment.TransactionType.DONATION),
    EventType.REFUND_SENT: _send_refund,
    EventType.SIMULATED: _simulated,
}


def _reference_conflict(event: AthmEvent) -> str:
    """Why an eCommerce event cannot have its reference number: another checkout's payment holds it, or
    a payment that is not a checkout's."""
    if not event.type.is_ecommerce or not event.reference_number:
        return ""
    owner = _one(Payment.objects.filter(reference_number=event.reference_number))
    if owner is None:
        return ""
    same_checkout = owner.transaction_type == Payment.TransactionType.ECOMMERCE and (
        # An event without an ecommerceId, or a payment recorded without one: it names the same checkout.
        event.ecommerce_id is None or owner.ecommerce_id in (None, event.ecommerce_id)
    )
    if same_checkout:
        return ""  # a race that the next attempt sees the end of
    return f"referenceNumber {event.reference_number} already belongs to payment {owner.pk}"


def _asked_otherwise(payment: Payment, event: AthmEvent) -> str:
    """How a completion differs from the open checkout the business recorded (``payment``): its total, and
    the metadata it set; ``""`` when it does not. (ATH's guide: cross-check amounts against what the
    business itself asked for.)"""
    changes = []
    if payment.total and payment.total != event.total:
        changes.append(f"total {payment.total} asked, {event.total} paid")
    for name in _ORDER:
        if getattr(payment, name) and getattr(payment, name) != getattr(event, name):
            changes.append(f"{name} {getattr(payment, name)!r:.40} asked, {getattr(event, name)!r:.40} paid")
    return "; ".join(changes)


def _corrected(event: AthmEvent, payment: Payment) -> bool:
    """Whether ``event``, which ATH Móvil confirmed, corrects the (locked) ``payment`` found for it: one
    recorded unconfirmed, of another kind or otherwise than ATH confirms it (:func:`_agrees`)."""
    if event.verified_at is None or payment.verified_at is not None:
        return False
    return payment.transaction_type != _kind_of(event) or not _agrees(payment, event)


def _agrees(payment: Payment, event: AthmEvent) -> bool:
    """Whether ``payment`` records what ``event`` (as ATH Móvil confirmed it) says of the money and the
    order: its total and reference number, and its metadata and other amounts where the event gives any."""
    if payment.total != event.total:
        return False
    if event.reference_number and payment.reference_number != event.reference_number:
        return False
    if any(getattr(event, name) and getattr(payment, name) != getattr(event, name) for name in _ORDER):
        return False
    if event.items and _item_keys(payment.items) != _item_keys(item.as_json() for item in event.items):
        return False
    return all(
        getattr(event, name) is None or getattr(payment, name) == getattr(event, name) for name in _AMOUNTS
    )


def _item_keys(items) -> list[tuple]:
    """Items (as stored, ``Item.as_json()``) by name, quantity and price, whatever their order."""
    return sorted((item.get("name"), item.get("quantity"), item.get("price")) for item in items)


_ORDER = ("metadata_1", "metadata_2")
_AMOUNTS = ("subtotal", "tax", "fee", "net_amount")


def _corrections(payment: Payment, event: AthmEvent) -> str:
    """What ATH Móvil's confirmed ``event`` changes in an unconfirmed ``payment``: ``"total 1.00 → 26.00;
    metadata_1 'order-9999' → 'order-1002'"``."""
    changes = []
    if payment.transaction_type != _kind_of(event):
        changes.append(f"transaction type {payment.transaction_type} → {_kind_of(event)}")
    for name in ("total", "reference_number", *_AMOUNTS):
        recorded, confirmed = getattr(payment, name), getattr(event, name)
        if confirmed is not None and confirmed != "" and recorded != confirmed:
            changes.append(f"{name} {recorded} → {confirmed}")
    for name in _ORDER:
        if getattr(event, name) and getattr(payment, name) != getattr(event, name):
            changes.append(f"{name} {getattr(payment, name)!r:.40} → {getattr(event, name)!r:.40}")
    if event.items and _item_keys(payment.items) != _item_keys(item.as_json() for item in event.items):
        changes.append("the items")
    return "recorded unconfirmed, rewritten from ATH Móvil's answer: " + "; ".join(changes)


def same_refund(event: AthmEvent) -> Refund | None:
    """The refund recorded for a refund event: by its idempotency key, or else (a copy under another date,
    a webhook dated otherwise than the report's row) the refund of the same reference number, daily id and
    amount on the same Puerto Rico day: the same refund at ATH (its daily id is unique in the business's
    day). A refund asked for here is found by its daily id whatever number it was recorded under: ATH's
    deliveries name it by its payment's number or by its own, which may be known only later. Without a
    daily id, only the key: two refunds of one amount on one day are told apart by their dates."""
    refunds = Refund.objects.select_related("payment")
    refund = _one(refunds.filter(idempotency_key=event.idempotency_key))
    when = event.effective_date
    if refund is not None or event.daily_transaction_id is None or when is None:
        return refund
    day = when.astimezone(PUERTO_RICO).replace(hour=0, minute=0, second=0, microsecond=0)
    return _one(
        refunds.filter(
            Q(reference_number=event.reference_number) | Q(requested_at__isnull=False),
            daily_transaction_id=event.daily_transaction_id,
            amount=event.total,
            transaction_date__gte=day,
            transaction_date__lt=day + timedelta(days=1),
        )
    )


def named(reference_number: str) -> Q:
    """The refunds a delivery naming ``reference_number`` can be about: those recorded under it, and those
    asked for here, which are known by both their numbers (a copy may name the one their first delivery
    did not: the payment's, or the refund's own from ATH's answer)."""
    return (
        Q(reference_number=reference_number)
        | Q(requested_at__isnull=False, refund_reference_number=reference_number)
        | Q(requested_at__isnull=False, payment__reference_number=reference_number)
    )


def _confirm_recorded(payment: Payment, event: AthmEvent) -> None:
    """Mark an unconfirmed (locked) payment confirmed by ``event``, which ATH confirmed as recorded (total,
    metadata): its redeliveries need not ask again. (Otherwise it stays unconfirmed; another total is a
    ``conflicting_redelivery``.)"""
    if event.verified_at is not None and payment.verified_at is None and _agrees(payment, event):
        payment.verified_at = event.verified_at
        payment.save(update_fields=["verified_at", "updated_at"])


def _evict_squatter(event: AthmEvent) -> dict | None:
    """For an event ATH Móvil confirmed whose reference number an unconfirmed payment of another
    transaction holds (a forged app payment that arrived first, another checkout): :func:`_evict` it, and
    return the anomaly for the confirmed event's delivery. A completion recorded in ATH's published shape
    under that number is the same checkout: joined instead (:func:`_join_checkout`), and corrected from
    ATH's answer if it was recorded otherwise."""
    if event.verified_at is None or not event.reference_number:
        return None
    if _reference_conflict(event) == "" and not _unjoinable(event):
        return None
    with transaction.atomic():
        squatter = _locked_payment(reference_number=event.reference_number)
        if squatter is None or squatter.verified_at is not None:
            return None
        return _evict(squatter, event)


def _unjoinable(event: AthmEvent) -> bool:
    """Whether a completion recorded in ATH's published shape holds the reference number of ``event``
    while another payment already holds its ``ecommerceId`` (each recorded unconfirmed): two rows of one
    checkout that cannot be joined. The one under the ecommerceId is corrected; the other gives the
    number up."""
    if not event.ecommerce_id:
        return False
    published = Payment.objects.filter(
        reference_number=event.reference_number,
        transaction_type=Payment.TransactionType.ECOMMERCE,
        ecommerce_id=None,
    )
    return published.exists() and Payment.objects.filter(ecommerce_id=event.ecommerce_id).exists()


def _kind_of(event: AthmEvent) -> str:
    """The ``Payment.transaction_type`` of the payment an event records."""
    if event.type == EventType.PAYMENT_RECEIVED:
        return Payment.TransactionType.PAYMENT
    if event.type == EventType.DONATION_RECEIVED:
        return Payment.TransactionType.DONATION
    return Payment.TransactionType.ECOMMERCE


def _evict(squatter: Payment, event: AthmEvent) -> dict:
    """Take the reference number of ``event`` (confirmed by ATH Móvil) from the unconfirmed, locked payment
    that holds it, with the refunds tied to it through that number: they wait for the confirmed payment,
    which ties them to itself after its commit (with their ``refund_sent`` again, now naming it). The
    squatter is flagged ``reference_conflict``; returns the anomaly for the confirmed event's delivery."""
    refunds = list(Refund.objects.select_for_update().filter(payment=squatter).order_by("pk"))
    moved = sum((refund.amount for refund in refunds), Decimal("0.00"))
    detail = (
        f"payment {squatter.pk} held reference number {event.reference_number}, which ATH Móvil confirms "
        f"for this {event.type}; the number was taken from it"
    )
    if refunds:
        detail += f", and its {len(refunds)} refund(s) of {moved} moved to the confirmed payment"
        Refund.objects.filter(pk__in=[refund.pk for refund in refunds]).update(payment=None, linked_at=None)
        squatter.total_refunded_amount -= moved
    squatter.reference_number = None
    at = timezone.localtime().isoformat()
    flagged = _anomaly("reference_conflict", detail)
    squatter.anomalies = [*squatter.anomalies, {**flagged, "at": at, "event_type": event.type}]
    squatter.save(update_fields=["reference_number", "anomalies", "total_refunded_amount", "updated_at"])
    log.warning("payment %s: reference_conflict with a confirmed %s", squatter.pk, event.type)
    return flagged


# A transaction the database rolled back to break a deadlock or a serialization conflict: MySQL and
# MariaDB's error 1213, PostgreSQL's SQLSTATE 40P01 and 40001.
_DEADLOCK_CODES = {1213, "40P01", "40001"}


def _is_deadlock(exc: OperationalError) -> bool:
    cause = exc.__cause__
    code = getattr(cause, "sqlstate", None) or (cause.args[0] if cause is not None and cause.args else None)
    return code in _DEADLOCK_CODES


def _locked_payment(**lookup: Any) -> Payment | None:
    return _one(Payment.objects.select_for_update().filter(**lookup))


def _one(queryset: QuerySet) -> Any:
    """The row that a lookup on a unique column finds, or ``None``.

    Unlike ``first()``, no ORDER BY: one row needs none, and on this hot path Django's compiling of the
    model's default ordering costs more than the database's answer.
    """
    return next(iter(queryset.order_by()[:1]), None)


def _has_waiting_refunds(reference_number: str) -> bool:
    """Whether refunds with this reference number wait for their payment.

    Asked after nearly every new payment and redelivery, almost always to hear "no". Written as SQL: the
    ORM's ``exists()`` spends about 0.35 ms compiling a query that the database answers in 0.03 ms
    (SQLite; 0.6 ms against 0.13 ms on PostgreSQL).
    """
    table = connection.ops.quote_name(Refund._meta.db_table)
    reference = connection.ops.quote_name(Refund._meta.get_field("reference_number").column)
    payment = connection.ops.quote_name(Refund._meta.get_field("payment").column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {table} WHERE {reference} = %s AND {payment} IS NULL LIMIT 1", [reference_number]
        )
        return cursor.fetchone() is not None


def _fill(payment: Payment, event: AthmEvent) -> None:
    payment.reference_number = event.reference_number
    payment.daily_transaction_id = event.daily_transaction_id
    payment.total = event.total
    payment.subtotal = event.subtotal
    payment.tax = event.tax
    payment.fee = event.fee
    payment.net_amount = event.net_amount
    payment.metadata_1 = event.metadata_1
    payment.metadata_2 = event.metadata_2
    payment.items = [item.as_json() for item in event.items]
    payment.business_name = event.business_name
    payment.name = event.name
    payment.phone_number = event.phone_number
    payment.email = event.email
    payment.message = event.message
    payment.transaction_date = event.effective_date
    if event.verified_at is not None:
        payment.verified_at = event.verified_at


def _write_notices(notices: list[Notice], record: WebhookEvent | None) -> None:
    """Save the notices of a change, in the caller's transaction, in one statement; with ``record``, as
    that delivery's."""
    if not notices:
        return
    if record is not None:
        for notice in notices:
            notice.webhook_event = record
    Notice.objects.bulk_create(notices)
    if notices[0].pk is None:  # MySQL cannot return the new ids of a bulk insert
        ids = dict(
            Notice.objects.filter(notice_id__in=[n.notice_id for n in notices]).values_list("notice_id", "pk")
        )
        for notice in notices:
            notice.pk = ids[notice.notice_id]


def _write_outbox(
    notices: list[Notice], record: WebhookEvent | None, *, occurred_at: datetime
) -> list[OutboxMessage]:
    """One outbox message per notice, in the caller's transaction: the same changes the signals announce,
    each message with its notice's id."""
    if not notices or not outbox.enabled():
        return []
    messages = []
    for notice in notices:
        refund = notice.refund
        messages.append(
            outbox.message(
                dispatch.kind_of(notice),
                payment=notice.payment,
                refund=refund,
                # A refund happened when ATH sent it, which for a waiting refund is before this event.
                occurred_at=refund.transaction_date if refund else occurred_at,
                webhook_event=record,
                event_id=notice.notice_id,
            )
        )
    outbox.add(messages)
    return messages


def _add_refunds(payment: Payment, refunds: list[Refund]) -> None:
    """Count refunds against their (locked) payment, keeping ``total_refunded_amount`` their exact sum."""
    payment.total_refunded_amount += sum(refund.amount for refund in refunds)
    payment.save(update_fields=["total_refunded_amount", "updated_at"])


# --- after commit ------------------------------------------------------------------------------------


def _after_commit(record: WebhookEvent, result: Transition) -> None:
    report = record.dispatch_report = dispatch.Report()
    # Anomalies that tying waiting refunds to the payment found, for the caller to count.
    record.linked_anomalies = []
    messages = list(result.messages)
    try:
        if result.outcome == Outcome.DUPLICATE and result.payment is not None:
            # A redelivery heals what the first delivery left unfinished (its answer lost, its process gone).
            dispatch.deliver_pending_of(result.payment, report)
        dispatch.deliver(result.notices, report)
        if result.link_reference:
            linked, linked_messages, record.linked_anomalies = _link_waiting_refunds(
                result.link_reference, record
            )
            messages += linked_messages
            dispatch.deliver(linked, report)
    except Exception as exc:
        # The change has committed, and so have its notices: a redelivery or the relay finishes the job.
        report.left_pending += 1
        log.warning(
            "webhook event %s: %s after the commit; the relay will finish its notices",
            record.pk,
            type(exc).__name__,
        )
    if messages:
        outbox.notify_publishers(outbox.groups_of(messages))


def link_waiting_refunds() -> tuple[list[Notice], list[dict]]:
    """Tie every refund that waits for a payment now recorded to it; returns the notices written and the
    anomalies found (each also flagged on its payment, like a delivery's).

    The relay's sweep, for links that the delivery which made them possible did not make (it died after its
    commit). The notices are left for the caller to deliver; outbox messages are written as usual.
    """
    waiting = Refund.objects.filter(payment__isnull=True).filter(
        Exists(Payment.objects.filter(reference_number=OuterRef("reference_number")))
    )
    notices: list[Notice] = []
    anomalies: list[dict] = []
    for reference_number in set(waiting.values_list("reference_number", flat=True)):
        linked, _, found = _link_waiting_refunds(reference_number, None)
        notices += linked
        anomalies += found
    return notices, anomalies


def _link_waiting_refunds(
    reference_number: str, record: WebhookEvent | None
) -> tuple[list[Notice], list[OutboxMessage], list[dict]]:
    """Tie refunds that arrived before their payment to it, writing their notices and messages; returns
    them, and the anomalies the link found (flagged on the payment).

    This runs after the commit that created the payment or the refund, so whichever of two racing
    transactions commits last sees the other's row; the payment's row lock makes the link happen once.
    """
    if not _has_waiting_refunds(reference_number):
        return [], [], []
    waiting = Refund.objects.filter(reference_number=reference_number, payment__isnull=True)
    with transaction.atomic():
        payment = _locked_payment(reference_number=reference_number)
        if payment is None:
            return [], [], []
        # Locked by primary key: through the payment index, MariaDB would lock other payments' waiting
        # refunds too, and two linkings of different payments could deadlock.
        ids = list(waiting.values_list("pk", flat=True))
        refunds = list(
            Refund.objects.select_for_update()
            .filter(pk__in=ids, payment__isnull=True)
            .order_by("transaction_date", "pk")
        )
        if not refunds:
            return [], [], []
        now = timezone.now()
        for refund in refunds:
            refund.payment = payment
            refund.linked_at = now
        Refund.objects.bulk_update(refunds, ["payment", "linked_at"])
        _add_refunds(payment, refunds)
        anomalies = _refund_anomalies(payment, refunds)
        if anomalies:
            _flag(payment, anomalies, EventType.REFUND_SENT)
        # Each notice goes with its refund's own delivery, where the admin shows it and redispatch finds it.
        applied = WebhookEvent.objects.filter(refund__in=refunds, outcome=Outcome.APPLIED)
        deliveries = dict(applied.values_list("refund", "pk"))
        notices = [refund_notice(refund, payment) for refund in refunds]
        for notice in notices:
            notice.webhook_event_id = deliveries.get(notice.refund_id)
        _write_notices(notices, None)
        messages = _write_outbox(notices, record, occurred_at=now)
    log.info("linked %d waiting refund(s) to payment %s", len(refunds), payment.pk)
    return notices, messages, anomalies
