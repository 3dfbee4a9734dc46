"""Ask ATH Móvil before trusting an eCommerce event (``ATHM_VERIFY``).

ATH Móvil signs nothing, so anyone who learns the listener URL could post "COMPLETED" for an order that
was never paid. Before an eCommerce event changes a payment, :func:`check` asks ATH's findPayment for
that ``ecommerceId`` and compares: a completed event needs ATH to say COMPLETED with the same total and
reference number; a cancelled or expired one needs CANCEL (ATH reports expired checkouts as CANCEL).

- ATH agrees: ``None``; the event is applied as usual.
- ATH contradicts it (another final state, another total or reference, or no such payment): the reason;
  the delivery is recorded as ``rejected`` and changes nothing (:mod:`athm_core.receive`).
- ATH cannot say now (unreachable, slow, an error answer, an answer this code cannot read, or the payment
  still in an earlier state): :class:`Unavailable`; nothing is applied or recorded, so a redelivery or a
  replay finishes the job once ATH answers (the webhook answers 503).

:func:`check` is the default ``ATHM_VERIFIER``: every delivery, reprocessing included, goes through it.
Another check (a callable with the same signature, named by that setting or passed to
:func:`athm_core.receive.receive`) raises :class:`Unavailable` in the same case.

Refunds, app payments and donations have no lookup by id in ATH's API: findPayment knows eCommerce
payments only, and the transaction report is a date-range listing meant for reconciliation. They are
applied unverified; docs/security.md says what limits the damage.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from athm_core import processor
from athm_core.ath import client
from athm_core.conf import athm_settings
from athm_core.events import EventType
from athm_core.payloads import AthmEvent, PayloadError, read_amount

# What findPayment says before a checkout ends: the event may simply have overtaken ATH's own records.
_EARLIER_STATES = {"OPEN", "CONFIRM"}


class Unavailable(Exception):
    """ATH Móvil cannot confirm or contradict the event now."""


def check(event: AthmEvent) -> str | None:
    """``None`` if the event may be applied, or why ATH Móvil contradicts it. Raises :class:`Unavailable`."""
    if not athm_settings.ATHM_VERIFY or not event.type.is_ecommerce:
        return None
    if processor.already_applied(event):
        return None  # a redelivery: it changes nothing, so there is nothing to verify
    try:
        answer = client.find_payment(
            event.ecommerce_id,
            public_token=athm_settings.ATHM_PUBLIC_TOKEN,
            timeout=athm_settings.ATHM_VERIFY_TIMEOUT,
        )
    except client.AthmApiError as exc:
        if exc.status == 404:
            return "ATH Móvil knows no payment with this ecommerceId"
        raise Unavailable(str(exc)) from None
    return _compare(event, answer)


def _compare(event: AthmEvent, answer: Any) -> str | None:
    if not isinstance(answer, dict) or "data" not in answer:
        raise Unavailable("findPayment's answer has no data")
    data = answer["data"]
    if not data:
        return "ATH Móvil knows no payment with this ecommerceId"
    if not isinstance(data, dict) or not isinstance(data.get("ecommerceStatus"), str):
        raise Unavailable("findPayment's answer has no ecommerceStatus")
    status = data["ecommerceStatus"].strip().upper()
    expected = "COMPLETED" if event.type == EventType.ECOMMERCE_COMPLETED else "CANCEL"
    if status in _EARLIER_STATES:
        raise Unavailable(f"ATH Móvil still reports the payment as {status}")
    if status != expected:
        return f"ATH Móvil reports the payment as {status}, not {expected}"
    if event.type != EventType.ECOMMERCE_COMPLETED:
        return None
    total = _total(data)
    if total != event.total:
        return f"ATH Móvil reports a total of {total}, not {event.total}"
    reference = str(data.get("referenceNumber") or "").strip()
    if reference != (event.reference_number or ""):
        return "ATH Móvil reports another reference number"
    return None


def _total(data: dict[str, Any]) -> Decimal:
    """ATH's total, read like the webhook's own amounts (float noise included). A number that is not an
    amount in cents (negative, finer than a cent) is kept exact: no event's total equals it."""
    value = data.get("total")
    try:
        total = read_amount(value, "total")
    except PayloadError:
        total = _exact_number(value)
    if total is None:
        raise Unavailable("findPayment's answer has no readable total")
    return total


def _exact_number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None
