"""Ask ATH Móvil before trusting an eCommerce event (``ATHM_VERIFY``).

ATH Móvil signs nothing, so anyone who learns the listener URL could post "COMPLETED" for an order that
was never paid. Before an eCommerce event changes a payment, :func:`check` asks ATH's findPayment for
that ``ecommerceId`` and compares: a completed event needs ATH to say COMPLETED with the same total and
reference number; a cancelled or expired one needs CANCEL (ATH reports expired checkouts as CANCEL). Every
field that identifies the order or the money and that ATH's answer carries is compared with the body's,
where the body claims one: ``metadata1``, ``metadata2``, and for a completion the reference number, ``total``,
``subtotal``, ``tax``, ``fee``, ``netAmount`` and the items (their number; name, quantity and price where ATH
gives them; items ATH's answer gives unreadably are not compared, with a warning). A body can name the
real checkout, total and reference (the paying customer sees all three) and still lie about the order.

- ATH agrees: the event as ATH confirms it, which the processor writes: ATH's values for every field its
  answer gives (the body's stand only where ATH gives none).
- ATH contradicts it (another final state, any difference above, or no such payment): the reason, naming
  each difference; the delivery is recorded as ``rejected`` and changes nothing (:mod:`athm_core.receive`),
  and ATH's own webhook, or reconciliation, records the genuine payment.
- ATH cannot say now (unreachable, slow, an error answer, an answer this code cannot read, or the payment
  still in an earlier state): :class:`Unavailable`; nothing is applied, the delivery is kept as ``pending``
  and the relay verifies it again (:func:`next_verification`) until ATH answers, then applies it once, or
  rejects it (:func:`athm_core.replay.verify_pending`; the webhook answers 503).

:func:`check` is the default ``ATHM_VERIFIER``: every delivery, reprocessing included, goes through it.
Another check (a callable with the same signature, named by that setting or passed to
:func:`athm_core.receive.receive`) raises :class:`Unavailable` in the same case.

An eCommerce event without an ``ecommerceId`` (ATH Móvil's published shape) cannot be looked up with
findPayment. A completed one is confirmed in ATH's transaction report instead, by its reference number and
total, when ``ATHM_PRIVATE_TOKEN`` is set (one the report does not list yet waits ``pending``); without the
token, and for a cancelled or expired one (which names no reference number), the check raises
:class:`Unverifiable`: the delivery is kept as ``unverified``, never applied, and can be reprocessed once it
can be confirmed.

With verification on, a body whose amounts cannot be read is not refused outright when findPayment can
stand in for them: :func:`amounts_from_ath` reads the event again with ATH's amounts.

Refunds, app payments and donations have no lookup by id in ATH's API (findPayment knows eCommerce
payments only). With ``ATHM_PRIVATE_TOKEN`` set, the transaction report confirms them by reference number
(a refund by its amount and daily id too). The row is ATH's record as findPayment's answer is: the body's
metadata, amounts and items are compared with it (a difference rejects the event), and its values are
written where it gives them; a refund's date and daily id too, so that every delivery one row confirms is
one refund. One call per day's window, its rows used again for
:data:`REPORT_CACHE_SECONDS`; one the report does not list yet waits ``pending``. Without the private token
they are applied unverified; docs/security.md says what limits the damage. Every confirmed event carries
``verified_at``, stored on its payment: a confirmed event corrects an unconfirmed payment of its own
transaction (``corrected_from_ath``) and takes its reference number back from an unconfirmed payment of
another kind that holds it (``reference_conflict``; :mod:`athm_core.processor`).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils import timezone

from athm_core import processor
from athm_core.ath import client
from athm_core.conf import athm_settings
from athm_core.events import EventType
from athm_core.models import REQUESTED_KEY_PREFIX, Refund
from athm_core.payloads import (
    AMOUNT_FIELDS,
    PUERTO_RICO,
    AthmEvent,
    FieldWarning,
    PayloadError,
    parse_data,
    parse_report_row,
    read_amount,
    read_answer_fields,
    read_items,
    read_text,
)

# What findPayment says before a checkout ends: the event may simply have overtaken ATH's own records.
_EARLIER_STATES = {"OPEN", "CONFIRM"}
# ATH Móvil's error code for an ecommerceId it does not know (its Payment Button API guide): the one answer
# that contradicts an event for good. Any other error, a 404 without it included, is ATH not answering.
UNKNOWN_ECOMMERCE_ID = "BTRA_0031"


# How far from the event's date the transaction report is searched for its reference number, in days.
REPORT_WINDOW_DAYS = 1
# A pending delivery is verified again after a minute, then after twice as long each time, up to 30 minutes
# between tries; it is never given up (a setting may apply it unverified after a deadline instead).
VERIFICATION_RETRY = timedelta(minutes=1)
VERIFICATION_RETRY_MAX = timedelta(minutes=30)


def next_verification(attempts: int, *, now: datetime | None = None) -> datetime:
    """When a pending delivery that has been verified ``attempts`` times is due for another try."""
    wait = min(VERIFICATION_RETRY * 2 ** min(attempts, 16), VERIFICATION_RETRY_MAX)
    return (now or timezone.now()) + wait


class Unavailable(Exception):
    """ATH Móvil cannot confirm or contradict the event now."""


class NotConfirmedYet(Unavailable):
    """ATH Móvil answered, and does not confirm the event yet: its transaction report does not list it, or
    findPayment still reports the checkout ``OPEN`` or ``CONFIRM``. Waits like :class:`Unavailable`, but is
    never applied unverified (``ATHM_APPLY_UNVERIFIED_AFTER`` is for an ATH that cannot be asked): after
    :data:`CONFIRMATION_DEADLINE` it is kept ``unverified`` instead (see ``replay.verify_pending``)."""


# How long a delivery that ATH Móvil answers about but does not confirm (a reference number its report never
# lists: made up, most likely) waits pending before it is kept ``unverified``: a bound on the relay's calls.
CONFIRMATION_DEADLINE = timedelta(days=2)


class Unverifiable(Exception):
    """The event cannot be confirmed with what this deployment can ask (an eCommerce event without an
    ``ecommerceId``); it is kept as ``unverified``, not applied."""


def check(event: AthmEvent) -> AthmEvent | str | None:
    """The event as ATH Móvil confirms it (or ``None``: as it is) if it may be applied, or why ATH Móvil
    contradicts it.

    Raises :class:`Unavailable` when ATH cannot answer now, :class:`Unverifiable` when the event cannot be
    confirmed at all with the settings as they are.
    """
    if not athm_settings.ATHM_VERIFY or not event.type.signal:  # the test button: never a business row
        return None
    applied = processor.applied_state(event)
    if applied == processor.CONFIRMED or (applied == processor.UNCONFIRMED and not _confirmable_again(event)):
        return None  # a redelivery: it changes nothing, so there is nothing to verify
    # Never applied; applied unconfirmed (and ATH can confirm it now); or a "redelivery" that contradicts
    # the confirmed payment (a forgery kept pending, say): ATH is asked.
    if not event.type.is_ecommerce:
        # App payments, donations and refunds: the transaction report confirms them, with the private token.
        return _check_in_report(event) if athm_settings.ATHM_PRIVATE_TOKEN else None
    if not event.ecommerce_id:
        return _check_in_report(event)
    try:
        answer = client.find_payment(
            event.ecommerce_id,
            public_token=athm_settings.ATHM_PUBLIC_TOKEN,
            timeout=athm_settings.ATHM_VERIFY_TIMEOUT,
        )
    except client.AthmApiError as exc:
        if exc.code == UNKNOWN_ECOMMERCE_ID:
            return f"ATH Móvil knows no payment with this ecommerceId ({UNKNOWN_ECOMMERCE_ID})"
        # Anything else (a 404 from a proxy or a wrong base URL included) says nothing of the payment.
        raise Unavailable(str(exc)) from None
    return _compare(event, answer)


def _confirmable_again(event: AthmEvent) -> bool:
    """Whether a redelivery of a completion, app payment or donation applied unconfirmed (before
    verification, or by the deadline) is asked about again: a checkout's, which findPayment answers for,
    and one keyed by its reference number when the transaction report can confirm it. The processor then
    marks that payment confirmed, rewrites it from ATH's answer (``corrected_from_ath``), or takes the
    number back from it (``reference_conflict``)."""
    if event.type == EventType.ECOMMERCE_COMPLETED and event.ecommerce_id:
        return True  # findPayment answers for it
    keyed_by_reference = event.type in (EventType.PAYMENT_RECEIVED, EventType.DONATION_RECEIVED) or (
        event.type == EventType.ECOMMERCE_COMPLETED and not event.ecommerce_id
    )
    return keyed_by_reference and bool(athm_settings.ATHM_PRIVATE_TOKEN)


def _compare(event: AthmEvent, answer: Any) -> str | None:
    if not isinstance(answer, dict) or "data" not in answer:
        raise Unavailable("findPayment's answer has no data")
    data = answer["data"]
    if not isinstance(data, dict) or not isinstance(data.get("ecommerceStatus"), str):
        # ATH answered, without the payment (``null``, ``{}``): it waits, and is kept unverified in the end.
        raise NotConfirmedYet("findPayment's answer has no ecommerceStatus")
    status = data["ecommerceStatus"].strip().upper()
    expected = "COMPLETED" if event.type == EventType.ECOMMERCE_COMPLETED else "CANCEL"
    if status in _EARLIER_STATES:
        raise NotConfirmedYet(f"ATH Móvil still reports the payment as {status}")
    if status != expected:
        return f"ATH Móvil reports the payment as {status}, not {expected}"
    differences = _differences(event, data)
    if differences:
        return "ATH Móvil's findPayment answer differs: " + "; ".join(differences)
    return replace(_as_confirmed(event, data), verified_at=timezone.now())


# (ATH's field, the event's attribute) for the amounts a completion's body and ATH's answer both carry.
_AMOUNTS = [
    ("total", "total"),
    ("subtotal", "subtotal"),
    ("subTotal", "subtotal"),
    ("tax", "tax"),
    ("fee", "fee"),
    ("netAmount", "net_amount"),
]


def _differences(event: AthmEvent, data: dict[str, Any]) -> list[str]:
    """Each field the body claims that ATH's answer gives otherwise, with both values."""
    differences = []
    for field, attribute in (("metadata1", "metadata_1"), ("metadata2", "metadata_2")):
        claimed = getattr(event, attribute)
        given = _metadata(data, field)
        if given and claimed and given != claimed:
            differences.append(f"{field} {claimed!r:.40}, ATH {given!r:.40}")
    if event.type != EventType.ECOMMERCE_COMPLETED:
        return differences
    total = _total(data)
    if total != event.total:
        differences.append(f"total {event.total}, ATH {total}")
    reference = str(data.get("referenceNumber") or "").strip()
    if reference and reference != (event.reference_number or ""):
        differences.append("the reference number")
    for field, attribute in _AMOUNTS[1:]:
        claimed = getattr(event, attribute)
        if field in data and claimed is not None:
            ath = _amount(data[field], field)
            if ath is not None and ath != claimed:
                differences.append(f"{field} {claimed}, ATH {ath}")
    ath_items = _ath_items(data)
    if event.items and ath_items:
        compared = [attribute for field, attribute in _ITEM_FIELDS.items() if _given(data["items"], field)]
        if _items_differ(event.items, ath_items, compared):
            differences.append("the items")
    return differences


def _as_confirmed(event: AthmEvent, data: dict[str, Any]) -> AthmEvent:
    """``event`` with ATH's values for what its answer gives: the record is ATH's, not the body's."""
    completed = event.type == EventType.ECOMMERCE_COMPLETED
    confirmed: dict[str, Any] = read_answer_fields(data) if completed else {}
    for field, attribute in (("metadata1", "metadata_1"), ("metadata2", "metadata_2")):
        given = _metadata(data, field)
        if given:
            confirmed[attribute] = given
    if event.type == EventType.ECOMMERCE_COMPLETED:
        for field, attribute in [*_AMOUNTS[1:], ("totalRefundedAmount", "total_refunded_amount")]:
            ath = _amount(data.get(field), field)
            if ath is not None:
                confirmed[attribute] = ath
        items = _ath_items(data)
        if items is None and data.get("items"):
            warning = FieldWarning("items", "findPayment's items cannot be read: the body's kept, uncompared")
            confirmed["warnings"] = (*event.warnings, warning)
        elif items is not None and (not event.items or (items and _complete(data["items"]))):
            confirmed["items"] = items
        # Otherwise ATH's items leave out a name, a quantity or a price: the body's, which agree with them
        # on everything they give, stand.
    return replace(event, **confirmed) if confirmed else event


def _metadata(data: dict[str, Any], field: str) -> str:
    """ATH's ``metadata1`` or ``metadata2``, read as a body's is (a number taken as text); ``""`` when it
    gives none (or something that is not text or a number)."""
    value = data.get(field)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    return read_text(value, field)


def _amount(value: Any, field: str) -> Decimal | None:
    try:
        return read_amount(value, field)
    except PayloadError:
        return _exact_number(value)  # not an amount in cents: no body's amount equals it


def _ath_items(data: dict[str, Any]) -> tuple | None:
    """The items of ATH's answer, read as a body's are; ``None`` when it gives no list, or one with an
    amount that cannot be read (``"$12.00"``): then its items say nothing either way."""
    if not isinstance(data.get("items"), list):
        return None
    try:
        return read_items(data["items"])
    except PayloadError:
        return None


# What an item is compared on, each only where ATH's answer gives it for every item.
_ITEM_FIELDS = {"name": "name", "quantity": "quantity", "price": "price"}


def _given(entries: list, field: str) -> bool:
    return all(isinstance(entry, dict) and entry.get(field) not in (None, "") for entry in entries)


def _complete(entries: list) -> bool:
    """Whether ATH's answer gives each item's name, quantity and price."""
    return all(_given(entries, field) for field in _ITEM_FIELDS)


def _items_differ(claimed: tuple, ath_items: tuple, compared: list[str]) -> bool:
    """Whether the items differ in number, or in the ``compared`` attributes (those ATH gives for every
    item: name, quantity, price), whatever their order."""
    if len(claimed) != len(ath_items):
        return True

    def keys(items) -> list[tuple]:
        return sorted(tuple(str(getattr(item, attribute) or "") for attribute in compared) for item in items)

    return keys(claimed) != keys(ath_items)


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


def _check_in_report(event: AthmEvent) -> AthmEvent | str:
    """Confirm an event by its reference number (and for a refund its amount) in ATH Móvil's transaction
    report, the days around its date: an app payment, a donation, a refund, or an eCommerce event without an
    ``ecommerceId``. Raises :class:`Unavailable` when the report does not list it yet (the delivery waits,
    ``pending``, for the relay to look again)."""
    if not event.reference_number:
        raise Unverifiable(
            "the event names no ecommerceId and no reference number: ATH Móvil cannot be asked about it"
        )
    if not athm_settings.ATHM_PRIVATE_TOKEN:
        raise Unverifiable(
            "the event names no ecommerceId, so findPayment cannot confirm it; set ATHM_PRIVATE_TOKEN to "
            "confirm its reference number in ATH Móvil's transaction report, then reprocess it"
        )
    when = event.effective_date
    if when is None:
        raise Unverifiable(
            "the event names no ecommerceId and no date to look it up in the transaction report"
        )
    day = when.astimezone(PUERTO_RICO).date()
    rows, fetched = _report(day, fresh=False)
    row = _row_of(event, rows)
    if row is None and not fetched:  # not in a copy kept from before: it may have been listed since
        row = _row_of(event, _report(day, fresh=True)[0])
    if row is None:
        what = f"reference number {event.reference_number}"
        if event.type == EventType.REFUND_SENT:
            daily = event.daily_transaction_id
            with_id = f" with daily id {daily}" if daily is not None else ""
            what = f"a refund of {event.total}{with_id} under {what}"
        raise NotConfirmedYet(
            f"ATH Móvil's transaction report does not list {what} "
            f"({REPORT_WINDOW_DAYS} day(s) either side of the event's date)"
        )
    if row.total != event.total:
        return f"ATH Móvil's transaction report gives a total of {row.total}, not {event.total}"
    differences = _row_differences(event, row)
    if differences:
        return "ATH Móvil's transaction report differs: " + "; ".join(differences)
    return replace(_as_reported(event, row), verified_at=timezone.now())


def _row_of(event: AthmEvent, rows: list[AthmEvent]) -> AthmEvent | None:
    """The report's row that is ``event``, or ``None``: of its own kind (a refund carries its payment's
    reference number) and reference number, the nearest in time.

    A refund (partial refunds share a reference number) is the row of its amount and daily id, recorded
    already or not (its copy, or its redelivery, is then a duplicate). Without a row of its daily id (the
    body gives none, or the rows do not), it is the nearest row of its amount that no recorded refund
    stands for: a second refund of one amount is never taken for the first, and waits for its own row.
    """
    listed = [
        row for row in rows if row.reference_number == event.reference_number and row.type == event.type
    ]
    if event.type == EventType.REFUND_SENT:
        listed = [row for row in listed if row.total == event.total]
        mine = [
            row
            for row in listed
            if event.daily_transaction_id is not None
            and row.daily_transaction_id == event.daily_transaction_id
        ]
        listed = mine or _unrecorded(event, listed)
    return min(listed, key=lambda each: _apart(each, event)) if listed else None


def _unrecorded(refund: AthmEvent, rows: list[AthmEvent]) -> list[AthmEvent]:
    """The refund rows (of the refund's reference number and amount) that no recorded refund stands for.
    A row with a daily id: none of that daily id on its Puerto Rico day. Rows without one cannot be told
    apart: they stand free while they outnumber the refunds of that amount recorded."""
    free = [
        row for row in rows if row.daily_transaction_id is not None and processor.same_refund(row) is None
    ]
    anonymous = [row for row in rows if row.daily_transaction_id is None]
    if anonymous:
        # A refund asked for here and not yet matched to ATH's row stands for none.
        recorded = Refund.objects.filter(
            reference_number=refund.reference_number, amount=refund.total
        ).exclude(idempotency_key__startswith=REQUESTED_KEY_PREFIX)
        if recorded.count() < len(rows):
            free += anonymous
    return free


def _apart(row: AthmEvent, event: AthmEvent) -> float:
    """How far apart in time (seconds) the row and the event are dated: of the rows that could be a refund
    (the same amount, no daily id to tell them apart), the nearest is taken."""
    if row.effective_date is None or event.effective_date is None:
        return 0.0
    return abs((row.effective_date - event.effective_date).total_seconds())


def _row_differences(event: AthmEvent, row: AthmEvent) -> list[str]:
    """Each field that identifies the order or the money where the body and the report's row both give one
    and differ, with both values (the report's row is in the webhook's shape)."""
    differences = []
    for attribute, field in (("metadata_1", "metadata1"), ("metadata_2", "metadata2")):
        claimed, given = getattr(event, attribute), getattr(row, attribute)
        if claimed and given and claimed != given:
            differences.append(f"{field} {claimed!r:.40}, ATH {given!r:.40}")
    if event.type == EventType.REFUND_SENT:
        return differences  # a refund's amount chose its row
    for attribute, field in (
        ("subtotal", "subtotal"),
        ("tax", "tax"),
        ("fee", "fee"),
        ("net_amount", "netAmount"),
    ):
        claimed, given = getattr(event, attribute), getattr(row, attribute)
        if claimed is not None and given is not None and claimed != given:
            differences.append(f"{field} {claimed}, ATH {given}")
    if event.items and row.items:
        compared = ["price"]
        if all(item.name for item in row.items):
            compared.append("name")
        if all(item.quantity is not None for item in row.items):
            compared.append("quantity")
        if _items_differ(event.items, row.items, compared):
            differences.append("the items")
    return differences


# What the report's row gives that is written instead of the body's (the row is ATH's record), where it
# gives one.
_REPORTED_TEXT = ("metadata_1", "metadata_2", "name", "phone_number", "email", "message", "business_name")
_REPORTED_AMOUNTS = ("subtotal", "tax", "fee", "net_amount")


def _as_reported(event: AthmEvent, row: AthmEvent) -> AthmEvent:
    """``event`` written as the report's ``row`` gives it. For a refund whose row gives a daily id, that
    includes its daily id and dates, which are part of its identity: every delivery that the same row
    confirms (a copy under another date included) is then the same refund, a duplicate of the first, even
    when they race."""
    changes: dict[str, Any] = {name: getattr(row, name) for name in _REPORTED_TEXT if getattr(row, name)}
    if row.daily_transaction_id is not None:
        changes["daily_transaction_id"] = row.daily_transaction_id
    if event.type == EventType.REFUND_SENT:
        if row.daily_transaction_id is not None:  # the row says which refund it is: it dates it too
            changes.update(
                {name: getattr(row, name) for name in ("date", "transaction_date") if getattr(row, name)}
            )
        return replace(event, **changes)
    changes.update({name: getattr(row, name) for name in _REPORTED_AMOUNTS if getattr(row, name) is not None})
    if row.items and (not event.items or all(item.name for item in row.items)):
        changes["items"] = row.items
    return replace(event, **changes)


# How long a day's transaction report is used again before it is asked for anew: a burst of deliveries of
# one day costs one call. A reference number not in the cached copy is asked for anew, except within
# :func:`one_report_call_per_day` (the relay's run), where a day's report is asked for once.
REPORT_CACHE_SECONDS = 60.0
_report_cache: dict[tuple[str, str, date], tuple[float, list[AthmEvent]]] = {}
_fetched_since: contextvars.ContextVar[float | None] = contextvars.ContextVar("fetched_since", default=None)


@contextlib.contextmanager
def one_report_call_per_day() -> Iterator[None]:
    """Within this block, each day's transaction report is asked for at most once: deliveries that the
    report does not list share one answer, however many of them wait on the same day."""
    token = _fetched_since.set(time.monotonic())
    try:
        yield
    finally:
        _fetched_since.reset(token)


def _report(day: date, *, fresh: bool) -> tuple[list[AthmEvent], bool]:
    """The readable rows of ATH Móvil's transaction report for ``day`` and the days around it, and
    whether they were asked for now."""
    key = (athm_settings.ATHM_API_BASE_URL, athm_settings.ATHM_PUBLIC_TOKEN, day)
    cached = _report_cache.get(key)
    if cached is not None:
        since = _fetched_since.get()
        if since is not None and cached[0] >= since:
            return cached[1], False  # asked for in this run already
        if not fresh and time.monotonic() - cached[0] < REPORT_CACHE_SECONDS:
            return cached[1], False
    window = timedelta(days=REPORT_WINDOW_DAYS)
    start = datetime.combine(day, dt_time.min, tzinfo=PUERTO_RICO)
    try:
        rows = client.transaction_report(
            start - window,
            start + window + timedelta(days=1, seconds=-1),
            public_token=athm_settings.ATHM_PUBLIC_TOKEN,
            private_token=athm_settings.ATHM_PRIVATE_TOKEN,
        )
    except client.AthmApiError as exc:
        raise Unavailable(str(exc)) from None
    events = []
    for row in rows:
        try:
            events.append(parse_report_row(row))
        except PayloadError:
            continue
    _report_cache[key] = (time.monotonic(), events)
    return events, True


def amounts_from_ath(data: dict[str, Any]) -> AthmEvent | None:
    """The event ``data`` describes, with ATH Móvil's amounts where the body's cannot be read.

    For a body whose amounts are unreadable (an :class:`~athm_core.payloads.AmountError`): with
    verification on, and an eCommerce ``ecommerceId`` that findPayment can look up, every amount ATH's
    answer gives for an unreadable one (``total``, ``subtotal``, ``tax``, ``fee``, ``netAmount``,
    ``totalRefundedAmount``; ``items`` when an item's amount is unreadable) replaces the body's, each
    replacement a warning; readable amounts stay the body's, for the check to compare.
    ``None`` when that cannot be done (verification off, no ``ecommerceId``). Raises :class:`Unavailable`
    when ATH cannot answer, :class:`~athm_core.payloads.PayloadError` when the event is still unreadable.
    The event is then checked as usual.
    """
    if not athm_settings.ATHM_VERIFY:
        return None
    kind = str(data.get("transactionType") or "").strip().lower()
    ecommerce_id = data.get("ecommerceId")
    if kind != "ecommerce" or not isinstance(ecommerce_id, str) or not ecommerce_id.strip():
        return None
    try:
        answer = client.find_payment(
            ecommerce_id.strip(),
            public_token=athm_settings.ATHM_PUBLIC_TOKEN,
            timeout=athm_settings.ATHM_VERIFY_TIMEOUT,
        )
    except client.AthmApiError as exc:
        if exc.code == UNKNOWN_ECOMMERCE_ID:
            return None
        raise Unavailable(str(exc)) from None
    found = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(found, dict):
        return None
    fixed = dict(data)
    warnings = []
    for field in AMOUNT_FIELDS:
        unreadable = _unreadable(data.get(field), field)
        if not unreadable:
            continue  # the body's own, which the check then compares with ATH's as usual
        if field in found:
            fixed[field] = found[field]
            warnings.append(FieldWarning(field, f"{unreadable}: ATH Móvil's findPayment amount used"))
        else:
            fixed.pop(field)
            warnings.append(FieldWarning(field, f"{unreadable}: left out (findPayment gives none)"))
    if _items_unreadable(data.get("items")):
        fixed["items"] = found.get("items") if isinstance(found.get("items"), list) else []
        warnings.append(
            FieldWarning("items", "an item's amount is unreadable: ATH Móvil's findPayment items used")
        )
    event = parse_data(fixed)
    return replace(event, warnings=(*warnings, *event.warnings))


def _unreadable(value: Any, field: str) -> str:
    try:
        read_amount(value, field)
    except PayloadError as exc:
        return exc.problem
    return ""


def _items_unreadable(items: Any) -> bool:
    if not isinstance(items, list):
        return False
    return any(
        _unreadable(entry.get(name), name)
        for entry in items
        if isinstance(entry, dict)
        for name in ("price", "tax")
    )
