"""Refunding a payment through ATH Móvil's refund API, the one place where a refund is tied to its payment
for sure (its answer names both the refund and the original transaction).

:func:`refund` refuses what ATH Móvil would refuse or what cannot be right (a payment not completed, an
amount that is not positive or above what is still refundable, pending refunds counted, a message over 50
characters) before anything is written or sent. It then records the refund ``pending`` (so that no crash
or timeout can lose the fact that money may have moved), asks ATH Móvil, and completes it from the answer,
firing ``refund_sent`` once through the durable notices. ATH Móvil's refusal marks it ``failed``. With no
answer (a timeout, a connection closed: ATH has been seen to make refunds it never answered) it is never
asked again blindly: it stays pending until its Refund Sent webhook, the transaction report
(``athm reconcile``) or :func:`check` (``athm refund --check``) settles it; one that certainly never
happened is marked failed by hand with :func:`abandon` (``athm refund --fail``). While one refund of a
payment is pending, no other of it is asked for: ATH's deliveries could not tell the two apart.

The state changes are :mod:`athm_core.processor`'s; the HTTP call is :func:`athm_core.ath.client.refund`.
The private token comes from the settings and never reaches a log or an exception message.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from athm_core import processor
from athm_core.ath import client, reconciliation
from athm_core.conf import athm_settings
from athm_core.events import EventType
from athm_core.models import Payment, Refund
from athm_core.payloads import PUERTO_RICO, PayloadError, parse_report_row, read_amount, read_date

log = logging.getLogger(__name__)

CENT = Decimal("0.01")
# ATH Móvil refuses a longer message (BTRA_0040).
MESSAGE_LIMIT = 50
# How long after a request its answer may still come (the refund call waits ``client.REFUND_TIMEOUT``):
# no refund is marked failed by hand before.
ANSWER_MAY_COME = timedelta(seconds=4 * client.REFUND_TIMEOUT)
# The request id of the deliveries that ``check`` records from the transaction report.
CHECK_REQUEST_ID = "refund-check"


class RefundError(Exception):
    """A refund was refused (nothing written, nothing sent), ATH Móvil refused it (``refund`` is then the
    failed refund), or it cannot be checked. The message says why."""

    def __init__(self, message: str, refund: Refund | None = None) -> None:
        super().__init__(message)
        self.refund = refund


class RefundPending(RefundError):
    """ATH Móvil did not answer: ``refund`` stays pending, and may have been made. Never ask again blindly:
    its webhook, ``athm reconcile`` or ``athm refund --check`` settles it."""


def refundable(payment: Payment) -> Decimal:
    """What can still be refunded of ``payment``: its total less its refunds, completed or pending."""
    return processor.refundable(payment)


# Dollars and cents in ASCII digits: no exponent, separator, plus sign or other script's digits (a minus
# is read, for :func:`refund` to say that an amount must be positive).
_AMOUNT = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)


def parse_amount(value: Any) -> Decimal:
    """An amount of dollars, exact to the cent, from text (``"5"``, ``"5.5"``, ``"12.34"``) or a number;
    ``ValueError`` says why not (an exponent, more than two decimals, anything but ASCII digits)."""
    text = str(value).strip()
    if not _AMOUNT.fullmatch(text):
        raise ValueError(f"not an amount of dollars: {value!r}")
    amount = Decimal(text)
    if amount != amount.quantize(CENT):
        raise ValueError(f"not an amount of dollars and cents: {value!r}")
    return amount.quantize(CENT)


@sensitive_variables("private_token")
def refund(payment: Payment, amount: Decimal | str | None = None, message: str = "") -> Refund:
    """Refund ``amount`` of ``payment`` (``None``: all that is still refundable) through ATH Móvil, with
    ``message`` (at most 50 characters) for the customer. Returns the completed refund; its ``flagged``
    lists what ATH's answer said otherwise than asked (``[{"kind", "detail"}]``, also flagged on the
    payment): the refund was made all the same.

    Raises :class:`RefundError` when refused before ATH is asked (nothing written) or when ATH refuses (the
    refund is then recorded ``failed``), :class:`RefundPending` when ATH did not answer (the refund stays
    pending), ``ImproperlyConfigured`` without the tokens (nothing written). Must run outside a database
    transaction: the pending refund is committed before ATH Móvil is asked, so that no rollback can lose it.
    """
    if connection.in_atomic_block:
        raise RefundError(
            "a refund must be asked for outside a transaction: its pending row is committed before ATH "
            "Móvil is asked, so that a rollback cannot lose a refund that may have been made"
        )
    public_token, private_token = _tokens()
    client.check_refund_transport()
    if amount is not None:
        try:
            amount = parse_amount(amount)
        except ValueError as exc:
            raise RefundError(str(exc)) from None
        if amount <= 0:
            raise RefundError(f"the amount to refund must be positive, not {amount}")
    message = "" if message is None else str(message)
    if len(message) > MESSAGE_LIMIT:
        raise RefundError(
            f"the message has {len(message)} characters; ATH Móvil takes at most {MESSAGE_LIMIT}"
        )
    if payment.status != Payment.Status.COMPLETED:
        raise RefundError(f"payment {payment} is {payment.status}: only a completed payment can be refunded")
    pending, refusal = processor.request_refund(payment.pk, amount, message)
    if pending is None:
        raise RefundError(refusal)
    try:
        answer = client.refund(
            pending.reference_number,
            pending.amount,
            message=message,
            public_token=public_token,
            private_token=private_token,
        )
    except client.AthmApiError as exc:
        if exc.refused and (exc.code or (exc.status is not None and exc.status < 500)):
            failed = processor.fail_requested_refund(pending.pk, str(exc))
            log.warning("refund %s of payment %s refused by ATH Móvil: %s", failed.pk, payment.pk, exc)
            raise RefundError(f"ATH Móvil refused the refund: {exc.message}{_code(exc)}", failed) from None
        return _left_pending(pending, str(exc))
    except Exception as exc:
        # Anything else once the request may have left: money may have moved, so it stays pending.
        return _left_pending(pending, f"{type(exc).__name__} while asking ATH Móvil")
    return _complete(pending, answer)


@sensitive_variables("private_token")
def check(refund_pk: int) -> Refund:
    """Ask ATH Móvil what became of a pending refund this system asked for: its transaction report for the
    refund's day (and the next), looking for a refund of that payment and amount. Found, it is settled
    through :func:`athm_core.processor.process` like a report row in reconciliation, with its
    ``refund_sent`` if nothing settled it before. Returns the refund as it then is (still pending when the
    report does not list it). Raises :class:`RefundError` for a refund that is not one of ours or not
    pending, and :class:`~athm_core.ath.client.AthmApiError` when the report cannot be read."""
    refund = Refund.objects.select_related("payment").filter(pk=refund_pk).first()
    why_not = processor.not_pending_request(refund_pk, refund)
    if why_not:
        raise RefundError(f"{why_not}: nothing to check")
    public_token, private_token = _tokens()
    day = refund.requested_at.astimezone(PUERTO_RICO).date()
    end = min(datetime.combine(day + timedelta(days=1), time(23, 59, 59), PUERTO_RICO), timezone.now())
    # From the day's start, or from just before the request when ATH's clock may date it the day before.
    start = min(datetime.combine(day, time.min, PUERTO_RICO), refund.requested_at - processor.ASKED_BEFORE)
    rows = client.transaction_report(
        start,
        end,
        public_token=public_token,
        private_token=private_token,
    )
    for row in rows:
        try:
            event = parse_report_row(row)
        except PayloadError:
            continue
        if event.type != EventType.REFUND_SENT or event.total != refund.amount:
            continue
        # The row this refund's would be by the processor's own matching (its reference number, the
        # payment's, or, for an unanswered refund, amount, time and customer), and not one that
        # reconciliation takes for a refund recorded already: never another refund's.
        if reconciliation.recorded(event) is not None:
            continue
        reported = processor.requested_refund(event)
        if reported is None or reported.pk != refund.pk:
            continue
        confirmed = replace(event, verified_at=timezone.now())
        processor.process(confirmed, raw_body=json.dumps(row), request_id=CHECK_REQUEST_ID)
        refund.refresh_from_db()
        if refund.status != Refund.Status.PENDING:
            break
    return refund


def abandon(refund_pk: int, reason: str = "") -> Refund:
    """Mark a pending refund asked for here ``failed`` by hand, once ATH Móvil shows that it never happened
    (ATH Business lists no such refund, or the request was turned away before it reached ATH, such as an
    HTML 403 from outside Puerto Rico): what it held back is refundable again. ``reason`` is kept on it.
    Raises :class:`RefundError` for a refund that does not exist, is not pending, was not asked for here,
    or was asked for less than :data:`ANSWER_MAY_COME` ago. Never asks ATH Móvil: ``athm refund --check``
    does."""
    found = Refund.objects.filter(pk=refund_pk).first()
    why_not = processor.not_pending_request(refund_pk, found)
    if why_not:
        raise RefundError(f"{why_not}: nothing to mark failed")
    age = timezone.now() - found.requested_at
    if age < ANSWER_MAY_COME:
        raise RefundError(
            f"refund {refund_pk} was asked for {int(age.total_seconds())} s ago: ATH "
            f"Móvil's answer may still be on its way. Wait {int(ANSWER_MAY_COME.total_seconds())} s from the "
            f"request, and look in ATH Business first"
        )
    try:
        return processor.abandon_requested_refund(refund_pk, reason or "ATH Móvil shows it never happened")
    except ValueError as exc:
        raise RefundError(str(exc)) from None


@sensitive_variables("private_token")
def _tokens() -> tuple[str, str]:
    public_token = athm_settings.ATHM_PUBLIC_TOKEN.strip()
    private_token = athm_settings.ATHM_PRIVATE_TOKEN.strip()
    if not public_token or not private_token:
        raise ImproperlyConfigured(
            "a refund goes through ATH Móvil's refund API, which needs ATHM_PUBLIC_TOKEN and "
            "ATHM_PRIVATE_TOKEN (ATH Business app: Settings > Development)"
        )
    return public_token, private_token


def _code(exc: client.AthmApiError) -> str:
    return f" ({exc.code})" if exc.code else ""


def _left_pending(pending: Refund, why: str) -> Refund:
    processor.note_pending_refund(pending.pk, why)
    pending.refresh_from_db()
    log.warning(
        "refund %s of payment %s: no answer from ATH Móvil (%s); left pending, never asked again blindly",
        pending.pk,
        pending.payment_id,
        why,
    )
    raise RefundPending(
        f"ATH Móvil did not answer ({why}): refund {pending.pk} of {pending.amount} stays pending and may "
        f"have been made. Its webhook or `athm reconcile` settles it, or ask with `athm refund --check "
        f"{pending.pk}`; do not refund again before it is settled. If ATH Business lists no such refund "
        f"after two minutes (an HTML error page, such as a 403 for a request from outside Puerto Rico, "
        f"means the request never reached ATH), `athm refund --fail {pending.pk}` releases its amount.",
        pending,
    )


def _complete(pending: Refund, answer: Any) -> Refund:
    data = answer.get("data") if isinstance(answer, dict) else None
    made = data.get("refund") if isinstance(data, dict) else None
    original = data.get("originalTransaction") if isinstance(data, dict) else None
    if not isinstance(made, dict):
        # A success that does not say what was refunded: not known what ATH did.
        return _left_pending(pending, "ATH Móvil answered without the refund it made")
    original = original if isinstance(original, dict) else {}
    original_reference = _text(original.get("referenceNumber"))
    try:
        when = read_date(made, "date")
    except PayloadError:
        when = None
    daily = made.get("dailyTransactionId", made.get("dailyTransactionID"))
    try:
        daily = int(daily) if daily not in (None, "") else None
    except (TypeError, ValueError):
        daily = None
    return processor.complete_requested_refund(
        pending.pk,
        reference_number=_text(made.get("referenceNumber")),
        original_reference_number=original_reference,
        amount=_answered_amount(made),
        daily_transaction_id=daily,
        transaction_date=when,
    )


def _answered_amount(made: dict) -> Decimal | None:
    """The amount ATH's answer says it refunded (``refundedAmount``, else ``amount`` or ``total``), exact
    to the cent as the webhooks' amounts are read; ``None`` when it gives none that can be read or none
    above zero (the amount asked for stands then)."""
    for name in ("refundedAmount", "amount", "total"):
        if made.get(name) not in (None, ""):
            try:
                amount = read_amount(made[name], name)
            except PayloadError:
                amount = None
            if amount is None or amount <= 0:
                log.warning("ATH Móvil's refund answer has %s that is not an amount refunded: ignored", name)
                return None
            return amount
    return None


def _text(value: Any) -> str:
    return value.strip()[:100] if isinstance(value, str) else ""
