"""Reconciliation with ATH Móvil's transaction report.

ATH Móvil documents no retry of a webhook it failed to deliver, so a payment or refund whose webhook was
lost exists only in ATH's records. :func:`reconcile` reads ATH's transaction report for a range of days
(Puerto Rico time) and brings the database in line through :func:`athm_core.processor.process`, the same
path a webhook takes: a missing transaction is created once, its signal fires once and its outbox message
is written once, and a second run finds it present. Money is never changed here: a transaction the
database already holds with other amounts is reported, not corrected.

The report's quirks: its rows are read by :func:`athm_core.payloads.parse_report_row`; a range it finds
too large (``BTRA_0026``) is asked again in halves, down to single days; no records (``BTRA_0022``) is an
empty report. Only transactions that moved money (``EventType.moves_money``: completed eCommerce payments,
app payments, donations and refunds) are reconciled; other rows are counted as ignored. The whole report
is read before anything is written, so an ATH Móvil that fails or does not answer leaves the database as
it was.

``athm reconcile`` runs it from a shell; the Lambda handler's scheduled function
(``handler.reconcile.lambda_handler``) runs it over the last two days. The report carries ids and amounts
only, never customer data or the private token.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Q
from django.utils import timezone

from athm_core import processor
from athm_core.ath import client
from athm_core.conf import athm_settings
from athm_core.events import EventType, Identity
from athm_core.models import Payment, Refund, WebhookEvent
from athm_core.payloads import PUERTO_RICO, AthmEvent, PayloadError, parse_report_row

# The request id stored on the webhook events that reconciliation records.
REQUEST_ID = "reconcile"
# Days reconciled by the scheduled run: yesterday and today, Puerto Rico time.
DEFAULT_DAYS = 2
# Sorts first: a row whose date cannot be read.
_LONG_AGO = datetime(2000, 1, 1, tzinfo=PUERTO_RICO)


@dataclass(frozen=True)
class Mismatch:
    """A transaction the database holds with amounts other than ATH Móvil's report."""

    kind: str  # "payment" or "refund"
    ecommerce_id: str | None
    reference_number: str | None
    differences: tuple[tuple[str, Decimal | None, Decimal | None], ...]  # (field, stored, report)

    def line(self) -> str:
        ids = " ".join(
            f"{name}={value}"
            for name, value in (
                ("ecommerceId", self.ecommerce_id),
                ("referenceNumber", self.reference_number),
            )
            if value
        )
        amounts = "; ".join(
            f"{name} stored {stored}, report {report}" for name, stored, report in self.differences
        )
        return f"mismatch {self.kind} {ids}: {amounts}"


@dataclass
class Report:
    """What a reconciliation found and did."""

    from_day: date
    to_day: date
    dry_run: bool = False
    rows: int = 0
    requests: int = 0
    created: list[str] = field(default_factory=list)  # one line per transaction created (or to create)
    present: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # one line per row that could not be read
    not_applied: list[str] = field(default_factory=list)  # rows the processor rejected or ignored
    ignored: Counter = field(default_factory=Counter)  # "transactionType/status" -> rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.from_day.isoformat(),
            "to": self.to_day.isoformat(),
            "dry_run": self.dry_run,
            "rows": self.rows,
            "requests": self.requests,
            "created": len(self.created),
            "present": self.present,
            "mismatches": len(self.mismatches),
            "unreadable": len(self.unreadable),
            "not_applied": len(self.not_applied),
            "ignored": sum(self.ignored.values()),
        }

    def lines(self) -> list[str]:
        """The report for a person: a summary, then one line per thing worth looking at."""
        created = "would create" if self.dry_run else "created"
        lines = [
            f"reconciled {self.from_day} to {self.to_day} (Puerto Rico time): {self.rows} transaction(s) "
            f"in ATH Móvil's report, {self.requests} request(s)",
            f"{created} {len(self.created)}, already present {self.present}, "
            f"amount mismatches {len(self.mismatches)}, unreadable {len(self.unreadable)}, "
            f"not applied {len(self.not_applied)}, ignored {sum(self.ignored.values())}",
        ]
        lines += [f"{created} {line}" for line in self.created]
        lines += [mismatch.line() for mismatch in self.mismatches]
        lines += [f"unreadable {line}" for line in self.unreadable]
        lines += [f"not applied {line}" for line in self.not_applied]
        lines += [f"ignored {count} {kind}" for kind, count in sorted(self.ignored.items())]
        if self.dry_run:
            lines.append("dry run: nothing was written")
        return lines


def reconcile(
    from_day: date,
    to_day: date,
    *,
    dry_run: bool = False,
    public_token: str | None = None,
    private_token: str | None = None,
) -> Report:
    """Bring the database in line with ATH Móvil's report for ``from_day`` to ``to_day`` (both included).

    Raises :class:`~athm_core.ath.client.AthmApiError` when the report cannot be read, before any write, and
    ``ImproperlyConfigured`` when the tokens are missing.
    """
    if from_day > to_day:
        raise ValueError(f"the range starts ({from_day}) after it ends ({to_day})")
    public_token = (public_token or athm_settings.ATHM_PUBLIC_TOKEN).strip()
    private_token = (private_token or athm_settings.ATHM_PRIVATE_TOKEN).strip()
    if not public_token or not private_token:
        raise ImproperlyConfigured(
            "reconciliation reads ATH Móvil's transaction report, which needs ATHM_PUBLIC_TOKEN and "
            "ATHM_PRIVATE_TOKEN (ATH Business app: Settings > Development)"
        )
    report = Report(from_day, to_day, dry_run=dry_run)
    rows = _fetch(from_day, to_day, report, public_token=public_token, private_token=private_token)
    report.rows = len(rows)

    events: list[tuple[AthmEvent, dict[str, Any]]] = []
    for index, row in enumerate(rows, 1):
        try:
            event = parse_report_row(row)
        except PayloadError as exc:
            report.unreadable.append(f"row {index}{_row_ids(row)}: {exc}")
            continue
        # Cancelled or expired checkouts and simulated transactions moved no money: counted, left alone.
        if not event.type.moves_money:
            report.ignored[f"{_raw(row, 'transactionType')}/{_raw(row, 'status')}"] += 1
            continue
        events.append((event, row))

    # Payments before refunds, so that a refund finds the payment that the same run creates.
    # Payments before refunds, each in time order (a row without a readable date first).
    events.sort(key=lambda pair: (pair[0].type == EventType.REFUND_SENT, pair[0].effective_date or _LONG_AGO))
    seen: set[str] = set()
    for event, row in events:
        if event.idempotency_key in seen:  # the same transaction twice in the report
            report.present += 1
            continue
        seen.add(event.idempotency_key)
        _reconcile_one(event, row, report)
    return report


def days_ending_today(days: int = DEFAULT_DAYS, *, now: datetime | None = None) -> tuple[date, date]:
    """The last ``days`` days up to today, in Puerto Rico time."""
    today = (now or timezone.now()).astimezone(PUERTO_RICO).date()
    return today - timedelta(days=days - 1), today


def _fetch(
    from_day: date, to_day: date, report: Report, *, public_token: str, private_token: str
) -> list[Any]:
    """Every row of the report for these days, asked again in halves while ATH says the range is too large."""
    report.requests += 1
    try:
        return client.transaction_report(
            datetime.combine(from_day, time.min, PUERTO_RICO),
            datetime.combine(to_day, time(23, 59, 59), PUERTO_RICO),
            public_token=public_token,
            private_token=private_token,
        )
    except client.AthmApiError as exc:
        if exc.code != client.RANGE_TOO_LARGE or from_day == to_day:
            raise
    middle = from_day + (to_day - from_day) // 2
    return _fetch(from_day, middle, report, public_token=public_token, private_token=private_token) + _fetch(
        middle + timedelta(days=1), to_day, report, public_token=public_token, private_token=private_token
    )


def _reconcile_one(event: AthmEvent, row: dict[str, Any], report: Report) -> None:
    stored = recorded(event)
    if stored is not None or processor.already_applied(event):
        report.present += 1
        if stored is not None:
            mismatch = _compare(event, stored)
            if mismatch:
                report.mismatches.append(mismatch)
        return
    description = _describe(event)
    if report.dry_run:
        report.created.append(description)
        return
    # ATH Móvil's own report: what it lists is confirmed.
    confirmed = replace(event, verified_at=timezone.now())
    record = processor.process(confirmed, raw_body=json.dumps(row), request_id=REQUEST_ID)
    if record.outcome == WebhookEvent.Outcome.APPLIED:
        report.created.append(description)
    elif record.outcome == WebhookEvent.Outcome.DUPLICATE:
        report.present += 1  # a webhook delivered it between the look and the write
    else:
        report.not_applied.append(f"{description}: {record.outcome} {record.error}".rstrip())


def recorded(event: AthmEvent) -> Payment | Refund | None:
    """The row that already records the transaction of a report row, if any (a refund asked for here and
    still pending is not one: the processor settles it)."""
    if event.type.identity == Identity.CHECKOUT:
        # A row in ATH's published shape names no ecommerceId: its reference number finds the payment.
        found = (
            {"ecommerce_id": event.ecommerce_id}
            if event.ecommerce_id
            else {"reference_number": event.reference_number}
        )
        return Payment.objects.filter(**found, status=Payment.Status.COMPLETED).first()
    if event.type.identity == Identity.REFERENCE:
        return Payment.objects.filter(reference_number=event.reference_number).first()
    if event.type != EventType.REFUND_SENT:
        raise ValueError(f"reconciliation does not know where a {event.type} event is recorded")
    refund = Refund.objects.filter(idempotency_key=event.idempotency_key).first()
    if refund is None:
        # The report may date a refund other than its webhook did (the key holds the date): the same
        # reference and daily number on the same Puerto Rico day is the same refund (a refund asked for
        # here, under either of its numbers). A row without a daily number: a refund of a number it names
        # and its amount on its day. A refund asked for here and still pending is not recorded yet: the
        # processor settles it.
        day = event.effective_date.astimezone(PUERTO_RICO).date()
        candidates = Refund.objects.filter(status=Refund.Status.COMPLETED)
        if event.daily_transaction_id is not None:
            candidates = candidates.filter(
                Q(reference_number=event.reference_number) | Q(requested_at__isnull=False),
                daily_transaction_id=event.daily_transaction_id,
            )
        else:
            candidates = candidates.filter(processor.named(event.reference_number), amount=event.total)
        refund = next(
            (each for each in candidates if each.transaction_date.astimezone(PUERTO_RICO).date() == day), None
        )
    return refund


def _compare(event: AthmEvent, stored: Payment | Refund) -> Mismatch | None:
    if isinstance(stored, Refund):
        pairs = [("total", stored.amount, event.total)]
        kind = "refund"
    else:
        pairs = [("total", stored.total, event.total)]
        # A field the report leaves out is not a difference.
        if event.fee is not None:
            pairs.append(("fee", stored.fee, event.fee))
        if event.net_amount is not None:
            pairs.append(("netAmount", stored.net_amount, event.net_amount))
        kind = "payment"
    differences = tuple((name, mine, theirs) for name, mine, theirs in pairs if mine != theirs)
    if not differences:
        return None
    return Mismatch(kind, event.ecommerce_id, event.reference_number, differences)


def _describe(event: AthmEvent) -> str:
    ids = f"ecommerceId={event.ecommerce_id} " if event.ecommerce_id else ""
    return f"{event.type} {ids}referenceNumber={event.reference_number} total={event.total}"


def _row_ids(row: Any) -> str:
    # Ids only: a row that cannot be read is still not printed, it may hold customer data.
    if not isinstance(row, dict):
        return ""
    ids = [
        f"{name}={row[name].strip()}"
        for name in ("ecommerceId", "referenceNumber")
        if isinstance(row.get(name), str) and row[name].strip() and len(row[name]) <= 100
    ]
    return f" ({' '.join(ids)})" if ids else ""


def _raw(row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    return value.strip().lower()[:32] if isinstance(value, str) else "?"
