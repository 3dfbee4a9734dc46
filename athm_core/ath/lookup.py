"""Look up one eCommerce payment at ATH Móvil (findPayment) and set its answer beside the row recorded here,
field by field; apply what the product missed.

:func:`look_up` asks findPayment for an ``ecommerceId`` and returns a :class:`Lookup`: ATH's view (status,
total, reference number, fee, net amount, refunded amount, date, metadata) next to the stored payment (by
its ``ecommerceId``, else by ATH's reference number; or none: "not recorded here"), each field marked where
the two differ. It changes nothing.

:func:`apply` records what ATH's answer shows that the product missed, and only that: a completion it never
heard of (ATH says ``COMPLETED``; the payment is ``open`` or not recorded). It goes through
:func:`athm_core.processor.process`, the path a webhook and reconciliation take, with ATH's answer as the
event (confirmed: ``verified_at``), so the payment's signal fires once and its SNS message is written once;
a second apply, or a webhook that came meanwhile, is a duplicate. Every other difference (other amounts, a
cancelled payment that ATH reports completed, an open one ATH reports ``CANCEL``, which does not say
whether it was cancelled or expired) is shown and never written: rows are never edited here.

``athm find_payment ECOMMERCE_ID [--apply]`` and the payments admin's two actions use it. ATH unreachable,
or answering an error (``BTRA_...``), raises :class:`LookupFailed` with a message for a person; nothing is
changed then. The public token is never in a message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from athm_core import processor
from athm_core.ath import client
from athm_core.conf import athm_settings
from athm_core.models import Payment, WebhookEvent
from athm_core.payloads import (
    PUERTO_RICO,
    PayloadError,
    parse_data,
    read_amount,
    read_answer_fields,
    read_text,
)

# The request id of the webhook events that an apply records.
REQUEST_ID = "find_payment"
# findPayment's error code for an ecommerceId it does not know.
UNKNOWN_ECOMMERCE_ID = "BTRA_0031"
# The longest ecommerceId a payment stores.
_ID_LENGTH = Payment._meta.get_field("ecommerce_id").max_length

# What each of ATH's states is called in ``Payment.status`` (ATH reports an expired checkout as CANCEL).
_STATES = {
    "OPEN": {Payment.Status.OPEN},
    "CONFIRM": {Payment.Status.OPEN},
    "COMPLETED": {Payment.Status.COMPLETED},
    "CANCEL": {Payment.Status.CANCELLED, Payment.Status.EXPIRED},
}


class LookupFailed(Exception):
    """ATH Móvil could not be asked, or answered an error: nothing was changed. The message says why."""


@dataclass(frozen=True)
class Field:
    """One line of the comparison: the field's name, ATH's value and the stored one (as text, ``"-"`` for
    none), and whether they differ (a field ATH's answer leaves out never differs)."""

    name: str
    ath: str
    recorded: str
    differs: bool


@dataclass(frozen=True)
class Lookup:
    """findPayment's answer (its ``data``) for ``ecommerce_id``, beside the payment recorded for it
    (``None``: not recorded here)."""

    ecommerce_id: str
    answer: dict[str, Any]
    payment: Payment | None
    fields: tuple[Field, ...]

    @property
    def ath_status(self) -> str:
        return str(self.answer.get("ecommerceStatus") or "").strip().upper()

    @property
    def differences(self) -> list[str]:
        return [field.name for field in self.fields if field.differs]

    @property
    def missed_completion(self) -> bool:
        """Whether ATH reports a completion this database never recorded (the payment is not recorded, or
        open, or cancelled or expired: a completion wins, as ATH's own late webhook's does): the one thing
        :func:`apply` does."""
        return self.ath_status == "COMPLETED" and (
            self.payment is None or self.payment.status != Payment.Status.COMPLETED
        )

    def not_applicable(self) -> str:
        """Why :func:`apply` would change nothing (``""`` when it would record a missed completion)."""
        if self.missed_completion:
            return ""
        if self.payment is None:
            return (
                f"ATH Móvil reports it {self.ath_status or 'without a status'}, not recorded here: only a "
                "completion missed here is applied"
            )
        if not self.differences:
            return "ATH Móvil and this database agree"
        return (
            f"ATH Móvil reports it {self.ath_status or 'without a status'} and it is recorded "
            f"{self.payment.status}: only a completion missed here (ATH says COMPLETED, the payment is not "
            "completed or not recorded) is applied; other differences are shown, never written"
        )

    def lines(self) -> list[str]:
        """The comparison for a person: a heading, a table (``*`` marks a difference), a conclusion."""
        recorded = (
            f"payment {self.payment.pk} ({self.payment.status})" if self.payment else "not recorded here"
        )
        lines = [f"findPayment for ecommerceId {self.ecommerce_id}; this database: {recorded}"]
        width = max(len(field.name) for field in self.fields)
        ath_width = max(len("ATH Móvil"), *(len(field.ath) for field in self.fields))
        lines.append(f"  {'field':<{width}}  {'ATH Móvil':<{ath_width}}  recorded here")
        for field in self.fields:
            mark = "*" if field.differs else " "
            lines.append(f"{mark} {field.name:<{width}}  {field.ath:<{ath_width}}  {field.recorded}")
        differences = self.differences
        if self.payment is None:
            lines.append(f"not recorded here: ATH Móvil reports it {self.ath_status or 'without a status'}")
        elif differences:
            lines.append(f"{len(differences)} difference(s), marked *: {', '.join(differences)}")
        else:
            lines.append("no differences: ATH Móvil and this database agree")
        return lines


def look_up(ecommerce_id: str, *, payment: Payment | None = None) -> Lookup:
    """Ask findPayment about ``ecommerce_id`` and compare its answer with the payment recorded for it (or
    ``payment``, when the caller has it). Changes nothing.

    Raises ``ValueError`` for an ``ecommerce_id`` that cannot be one (before anything is sent),
    ``ImproperlyConfigured`` without ``ATHM_PUBLIC_TOKEN``, :class:`LookupFailed` when ATH Móvil cannot be
    asked or answers an error.
    """
    ecommerce_id = _checked(ecommerce_id)
    public_token = athm_settings.ATHM_PUBLIC_TOKEN.strip()
    if not public_token:
        raise ImproperlyConfigured(
            "findPayment needs ATHM_PUBLIC_TOKEN (ATH Business app: Settings > Development)"
        )
    try:
        answer = client.find_payment(ecommerce_id, public_token=public_token)
    except client.AthmApiError as exc:
        message = str(exc).replace(public_token, "********")
        if exc.code == UNKNOWN_ECOMMERCE_ID:
            raise LookupFailed(
                f"ATH Móvil knows no payment with ecommerceId {ecommerce_id} ({UNKNOWN_ECOMMERCE_ID}); "
                "nothing was changed"
            ) from None
        raise LookupFailed(f"ATH Móvil could not be asked, nothing was changed: {message}") from None
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("ecommerceStatus"), str):
        raise LookupFailed(
            f"findPayment's answer for ecommerceId {ecommerce_id} names no payment (no ecommerceStatus); "
            "nothing was changed"
        )
    if payment is None:
        payment = _recorded(ecommerce_id, data)
    return Lookup(ecommerce_id, data, payment, _compare(data, payment))


def apply(lookup: Lookup) -> tuple[bool, str]:
    """Record the completion ATH Móvil reports and this database missed, through the processor; returns
    whether it was recorded, and what happened (or why nothing was applied). Never edits a row itself."""
    why_not = lookup.not_applicable()
    if why_not:
        return False, f"nothing applied: {why_not}"
    body = {
        **lookup.answer,
        "ecommerceId": lookup.ecommerce_id,
        "transactionType": "ecommerce",
        "status": "completed",
    }
    try:
        event = _event_from(body)
    except PayloadError as exc:
        return False, f"nothing applied: ATH Móvil's answer cannot be recorded: {exc}"
    # ATH Móvil's own answer: what it says is confirmed.
    record = processor.process(
        replace(event, verified_at=timezone.now()), raw_body=json.dumps(body), request_id=REQUEST_ID
    )
    if record.outcome == WebhookEvent.Outcome.APPLIED:
        payment = record.payment
        return True, (
            f"applied: payment {payment.pk} recorded {payment.status} from ATH Móvil's answer "
            f"(webhook event {record.pk}); announced once (its signal, and SNS message if the outbox is on)"
        )
    if record.outcome == WebhookEvent.Outcome.DUPLICATE:
        return False, f"nothing applied: already recorded (webhook event {record.pk}, a duplicate)"
    return False, f"nothing applied: {record.outcome} {record.error}".rstrip()


# Fields of ATH's answer that name no money: one that cannot be read is left out, as the verifier leaves
# it out, rather than leave a completion unrecorded.
_LEFT_OUT_UNREAD = ("items", "dailyTransactionId", "dailyTransactionID", "transactionDate", "date")


def _event_from(body: dict[str, Any]) -> Any:
    """The event of ATH's answer, read as a webhook's body is; a field that names no money and cannot be
    read is left out (the stored body keeps it). Raises :class:`PayloadError` for the rest."""
    body = dict(body)
    while True:
        try:
            return parse_data(body)
        except PayloadError as exc:
            unread = next((name for name in _LEFT_OUT_UNREAD if exc.field.startswith(name)), None)
            if unread is None or unread not in body:
                raise
            del body[unread]


def _checked(ecommerce_id: Any) -> str:
    value = ecommerce_id.strip() if isinstance(ecommerce_id, str) else ""
    if not value:
        raise ValueError("an ecommerceId is required")
    if len(value) > _ID_LENGTH or not value.isprintable() or any(char.isspace() for char in value):
        raise ValueError(f"not an ecommerceId: {value[:_ID_LENGTH]!r}")
    return value


def _recorded(ecommerce_id: str, data: dict[str, Any]) -> Payment | None:
    """The payment of this checkout: by its ecommerceId, else (recorded from ATH's published shape, without
    one) the eCommerce payment of ATH's reference number, which also wins over a row of the ecommerceId
    that is not completed when it is (its completion was recorded apart from the open checkout)."""
    payment = Payment.objects.filter(ecommerce_id=ecommerce_id).first()
    reference = data.get("referenceNumber")
    if (payment is None or payment.status != Payment.Status.COMPLETED) and isinstance(reference, str):
        completed = Payment.objects.filter(
            reference_number=reference.strip(), transaction_type=Payment.TransactionType.ECOMMERCE
        ).first()
        if completed is not None and (payment is None or completed.status == Payment.Status.COMPLETED):
            payment = completed
    return payment


def _compare(data: dict[str, Any], payment: Payment | None) -> tuple[Field, ...]:
    status = str(data.get("ecommerceStatus") or "").strip().upper()
    rows = [
        Field(
            "status",
            status or "-",
            payment.status if payment else "-",
            payment is not None and payment.status not in _STATES.get(status, set()),
        )
    ]

    def row(name: str, ath: Any, attribute: str) -> None:
        rows.append(_row(name, ath, payment, attribute))

    row("total", _amount(data.get("total")), "total")
    row("reference number", _text(data.get("referenceNumber"), "referenceNumber") or None, "reference_number")
    row("fee", _amount(data.get("fee")), "fee")
    row("net amount", _amount(data.get("netAmount")), "net_amount")
    row("refunded amount", _amount(data.get("totalRefundedAmount")), "total_refunded_amount")
    row("date", read_answer_fields(data).get("transaction_date"), "transaction_date")
    row("metadata1", _text(data.get("metadata1"), "metadata1") or None, "metadata_1")
    row("metadata2", _text(data.get("metadata2"), "metadata2") or None, "metadata_2")
    return tuple(rows)


def _row(name: str, ath: Any, payment: Payment | None, attribute: str) -> Field:
    """A line of the comparison. A value ATH's answer leaves out (``None``) is no difference; a payment
    without the value ATH gives differs."""
    recorded = getattr(payment, attribute) if payment is not None else None
    differs = payment is not None and ath is not None and ath != recorded
    return Field(name, _shown(ath), _shown(recorded), differs)


def _shown(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        return f"{value.astimezone(PUERTO_RICO):%Y-%m-%d %H:%M:%S} (Puerto Rico)"
    return str(value)


def _amount(value: Any) -> Decimal | str | None:
    """ATH's amount, read as a webhook's is; one that is not an amount in cents is kept as sent (text)."""
    try:
        return read_amount(value, "amount")
    except PayloadError:
        return str(value)[:40]


def _text(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    return read_text(value, field)
