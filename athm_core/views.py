"""The overview: one read-only page where a merchant sees what ATH Móvil sent and what came of it, in plain
words, without knowing the admin's lists and filters.

It shows the latest payments (date, status, total, order, reference number or ecommerceId, customer), the
latest refunds, the latest webhooks ATH Móvil delivered with their outcome and any error, and what is still
to finish: webhook deliveries that need a look (failed, pending ATH Móvil's verification, unverified,
rejected) and are not settled since; changes that a receiver of the merchant's has failed or not yet run
(their notices); and messages still waiting to be published to SNS (the outbox), with how many and since
when. Each row links to its page in the admin. Nothing retries by itself on a local machine: the page says
which command does (``athm relay``, ``athm reprocess --failed``), and that in AWS the relay runs every minute.

Mount it behind the admin's login, staff only, in the admin's look (``handler.urls`` does)::

    path("admin/overview/", admin.site.admin_view(overview), name="athm_overview")

Money is shown in dollars and cents, times in the project's time zone (Puerto Rico's, in
``handler.settings``). The page costs the same few queries however many rows there are: each list is
bounded, its columns chosen, and what a row links to is read in the same query.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib import admin
from django.contrib.admin.sites import AdminSite
from django.db.models import Count, Exists, F, Min, Model, OuterRef, Q
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from athm_core import replay
from athm_core.conf import athm_settings
from athm_core.models import Notice, OutboxMessage, Payment, Refund, WebhookEvent

# How many of the latest payments, refunds and webhooks; how many of the oldest unfinished of each kind.
LATEST = 25
UNFINISHED = 50

# The webhook's kinds (WebhookEvent.event_type) and the changes announced (Notice.signal), as a merchant
# would say them.
EVENT_WORDS = {
    "ecommerce.completed": "Online payment completed",
    "ecommerce.cancelled": "Online checkout cancelled",
    "ecommerce.expired": "Online checkout expired",
    "refund.sent": "Refund sent",
    "payment.received": "Payment received in the app",
    "donation.received": "Donation received",
    "simulated": "Test from the ATH Business app",
    "": "Could not be read",
}
CHANGE_WORDS = {
    "payment_completed": "Payment completed",
    "payment_cancelled": "Checkout cancelled",
    "payment_expired": "Checkout expired",
    "refund_sent": "Refund sent",
    "payment_received": "Payment received in the app",
    "donation_received": "Donation received",
}
# Outcomes that need a look: the webhook changed nothing, or not yet.
TROUBLE = {
    WebhookEvent.Outcome.INVALID,
    WebhookEvent.Outcome.FAILED,
    WebhookEvent.Outcome.REJECTED,
    WebhookEvent.Outcome.UNVERIFIED,
    WebhookEvent.Outcome.PENDING,
}


# What the merchant does about a delivery that needs a look, by its outcome.
NEEDS_A_LOOK = {
    WebhookEvent.Outcome.INVALID: (
        "Could not be read (the problem says why), so nothing was recorded. If ATH Business shows this "
        "payment, athm reprocess {pk} records it once a fix of this project reads it; a body you do not "
        "recognise means someone else knows the listener URL: rotate the webhook secret (docs/operations.md)."
    ),
    WebhookEvent.Outcome.FAILED: (
        "Failed to record: a bug, kept with its traceback (on its page). Once the cause is fixed, "
        "run athm reprocess --failed."
    ),
    WebhookEvent.Outcome.PENDING: (
        "Held until ATH Móvil can verify it. In AWS the relay asks again every minute; on this machine "
        "run athm relay (it asks ATH Móvil with ATHM_PUBLIC_TOKEN), or athm reprocess {pk} to try now."
    ),
    WebhookEvent.Outcome.UNVERIFIED: (
        "Kept, not applied: ATH Móvil could not confirm it. Check it in ATH Business; "
        "athm reprocess {pk} applies it once ATH Móvil confirms it."
    ),
    WebhookEvent.Outcome.REJECTED: (
        "Not applied: ATH Móvil (or a payment it confirmed) contradicts it. Check the payment in "
        "ATH Business. If ATH Móvil never sent it, someone else knows the listener URL: rotate the webhook "
        "secret (docs/operations.md)."
    ),
}
# Names of the sections a user may not see, for the sentence that says why they are missing.
SECTION_NAMES = [
    (Payment, "payments"),
    (Refund, "refunds"),
    (WebhookEvent, "webhooks"),
    (Notice, "notices"),
    (OutboxMessage, "outbox messages"),
]


def overview(request: HttpRequest, site: AdminSite = admin.site) -> TemplateResponse:
    """The overview page. Shows a section only to a user who may view its rows in ``site``, and says which
    sections the user may not view."""
    links = _Links(request, site)
    now = timezone.now()
    context: dict[str, Any] = {
        **site.each_context(request),
        "title": "Overview",
        "subtitle": None,
        "time_zone": timezone.get_current_timezone_name(),
        "hidden": _and([name for model, name in SECTION_NAMES if not links.can_view(model)]),
    }
    if links.can_view(Payment):
        context["payments"] = _payments(links)
    if links.can_view(Refund):
        context["refunds"] = _refunds(links)
    if links.can_view(WebhookEvent):
        context["webhooks"] = _webhooks(links)
        context["deliveries"] = _deliveries(links, now)
    if links.can_view(Notice):
        context["unfinished"] = _unfinished(links, now)
    if links.can_view(OutboxMessage):
        context["waiting"] = _waiting(links, now)
    request.current_app = site.name
    return TemplateResponse(request, "athm_core/overview.html", context)


class _Links:
    """Which models the user may see in the admin site, and the URL of a row's page there."""

    def __init__(self, request: HttpRequest, site: AdminSite) -> None:
        self.request = request
        self.site = site
        self._viewable: dict[type[Model], bool] = {}

    def can_view(self, model: type[Model]) -> bool:
        if model not in self._viewable:
            self._viewable[model] = self.site.is_registered(model) and self.site.get_model_admin(
                model
            ).has_view_permission(self.request)
        return self._viewable[model]

    def change(self, model: type[Model], pk: Any) -> str:
        if pk is None or not self.can_view(model):
            return ""
        opts = model._meta
        try:
            return reverse(
                f"{self.site.name}:{opts.app_label}_{opts.model_name}_change",
                args=[pk],
                current_app=self.site.name,
            )
        except NoReverseMatch:
            return ""

    def changelist(self, model: type[Model], query: str = "") -> str:
        opts = model._meta
        try:
            url = reverse(f"{self.site.name}:{opts.app_label}_{opts.model_name}_changelist")
        except NoReverseMatch:
            return ""
        return url + query


def money(amount: Decimal | None) -> str:
    """``Decimal("1234.5")`` -> ``"$1,234.50"``."""
    if amount is None:
        return ""
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):,.2f}"


def when(moment: datetime | None) -> str:
    """An aware time in the project's time zone, as people write it: ``"Nov 20, 2026, 2:07 PM"``."""
    if moment is None:
        return ""
    local = timezone.localtime(moment)
    hour = local.hour % 12 or 12
    return f"{local:%b} {local.day}, {local.year}, {hour}:{local:%M} {'AM' if local.hour < 12 else 'PM'}"


def next_try(moment: datetime | None, now: datetime) -> str:
    """When something is tried again: ``"due now"`` once that time is past."""
    if moment is None:
        return ""
    return "due now" if moment <= now else when(moment)


def payment_label(reference_number: str | None, order: str | None, ecommerce_id: str | None, pk: Any) -> str:
    """What names a payment to a merchant: its reference number, else its order (metadata1), else its
    ecommerceId, else ``"payment N"``."""
    if reference_number:
        return reference_number
    if order:
        return f"order {order}"
    if ecommerce_id:
        return ecommerce_id
    return f"payment {pk}" if pk is not None else ""


def _and(names: list[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b or c"``."""
    if len(names) < 2:
        return "".join(names)
    return ", ".join(names[:-1]) + " or " + names[-1]


def last_line(error: str, limit: int = 300) -> str:
    """An error's last line (a traceback's exception and message), cut to ``limit`` characters."""
    lines = [line.strip() for line in str(error or "").splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _payments(links: _Links) -> list[dict[str, Any]]:
    rows = (
        Payment.objects.only(
            "id",
            "transaction_type",
            "status",
            "ecommerce_id",
            "reference_number",
            "total",
            "total_refunded_amount",
            "name",
            "metadata_1",
            "transaction_date",
            "created_at",
        )
        # The payment's date in ATH Móvil, or when it was recorded where ATH Móvil gave none (a cancelled
        # or expired checkout): the date shown, so that the list reads sorted.
        .annotate(date=Coalesce("transaction_date", "created_at"))
        .order_by(F("date").desc(), "-id")
        .all()[:LATEST]
    )
    return [
        {
            "url": links.change(Payment, payment.pk),
            "reference_number": payment.reference_number or "",
            "ecommerce_id": payment.ecommerce_id or "",
            "order": payment.metadata_1,
            "kind": payment.get_transaction_type_display(),
            "status": payment.get_status_display(),
            "status_value": payment.status,
            "total": money(payment.total),
            "refunded": money(payment.total_refunded_amount) if payment.total_refunded_amount else "",
            "customer": payment.name,
            "date": when(payment.date),
        }
        for payment in rows
    ]


def _refunds(links: _Links) -> list[dict[str, Any]]:
    rows = (
        Refund.objects.select_related("payment")
        .only(
            "id",
            "payment_id",
            "reference_number",
            "amount",
            "transaction_date",
            "name",
            "created_at",
            *_PAYMENT_NAMES,
        )
        # By the date shown (ATH Móvil's, always given for a refund), as the payments are.
        .order_by("-transaction_date", "-id")
        .all()[:LATEST]
    )
    return [
        {
            "url": links.change(Refund, refund.pk),
            "reference_number": refund.reference_number,
            "amount": money(refund.amount),
            "customer": refund.name.strip(),
            "date": when(refund.transaction_date),
            "payment_url": links.change(Payment, refund.payment_id),
            "payment": _payment_label(refund.payment),
            "matched": refund.payment_id is not None,
        }
        for refund in rows
    ]


def _webhooks(links: _Links) -> list[dict[str, Any]]:
    rows = (
        WebhookEvent.objects.select_related("payment")
        .only("id", "received_at", "event_type", "outcome", "error", "payment_id", *_PAYMENT_NAMES)
        .order_by("-received_at", "-id")
        .all()[:LATEST]
    )
    return [
        {
            "url": links.change(WebhookEvent, event.pk),
            "kind": EVENT_WORDS.get(event.event_type, event.event_type),
            "outcome": event.get_outcome_display(),
            "trouble": event.outcome in TROUBLE,
            "error": last_line(event.error),
            "received": when(event.received_at),
            "payment_url": links.change(Payment, event.payment_id),
            "payment": _payment_label(event.payment),
        }
        for event in rows
    ]


# The payment's columns that name it (payment_label), read in the same query as the row that links to it.
_PAYMENT_NAMES = ("payment__id", "payment__reference_number", "payment__metadata_1", "payment__ecommerce_id")


def _payment_label(payment: Payment | None) -> str:
    if payment is None:
        return ""
    return payment_label(payment.reference_number, payment.metadata_1, payment.ecommerce_id, payment.pk)


def _needing_a_look():
    """The webhook deliveries that need a look and are not settled since (none of them purged):

    - failed: :func:`athm_core.replay.failed_events`, what ``athm reprocess --failed`` retries;
    - pending: :func:`athm_core.replay.pending_verification`, what the relay verifies again, unless a
      later delivery of the same event settled it (ATH Móvil's retry, ``athm reprocess``);
    - unverified and rejected: not settled by a later delivery of the same event (applied, duplicate,
      ignored, simulated, as for ``failed_events``); the latest delivery of each event only;
    - invalid: every one not purged (an unreadable body names no event that could settle it).

    One query now (``failed_events`` reads its candidates), and a queryset to read the rest with.
    """
    same_event = WebhookEvent.objects.filter(idempotency_key=OuterRef("idempotency_key")).exclude(
        idempotency_key=""
    )
    later = Q(received_at__gt=OuterRef("received_at")) | Q(
        received_at=OuterRef("received_at"), pk__gt=OuterRef("pk")
    )
    kept = (
        WebhookEvent.objects.filter(
            outcome__in=[WebhookEvent.Outcome.UNVERIFIED, WebhookEvent.Outcome.REJECTED], purged_at=None
        )
        .exclude(Exists(same_event.filter(later, outcome__in=replay.SETTLED)))
        .exclude(Exists(same_event.filter(later, outcome=OuterRef("outcome"), purged_at=None)))
        .values("pk")
    )
    failed = replay.failed_events().values("pk")
    pending = (
        replay.pending_verification()
        .exclude(Exists(same_event.filter(later, outcome__in=replay.SETTLED)))
        .values("pk")
    )
    unreadable = WebhookEvent.objects.filter(outcome=WebhookEvent.Outcome.INVALID, purged_at=None).values(
        "pk"
    )
    return WebhookEvent.objects.filter(
        Q(pk__in=failed) | Q(pk__in=pending) | Q(pk__in=kept) | Q(pk__in=unreadable)
    )


def _deliveries(links: _Links, now: datetime) -> dict[str, Any]:
    """The deliveries that need a look: how many of each outcome, and the oldest of them, with what their
    stored body says they are about (never the customer's name, phone or email)."""
    trouble = _needing_a_look()
    counts = {
        row["outcome"]: row["count"]
        for row in trouble.order_by().values("outcome").annotate(count=Count("id"))
    }
    rows = trouble.only("id", "received_at", "event_type", "outcome", "raw_body", "verify_after").order_by(
        "received_at", "id"
    )[:UNFINISHED]
    return {
        "count": sum(counts.values()),
        "counts": [
            {"outcome": outcome.label.split(" (")[0].lower(), "count": counts[outcome]}
            for outcome in NEEDS_A_LOOK
            if counts.get(outcome)
        ],
        "list_url": links.changelist(WebhookEvent),
        "rows": [
            {
                "url": links.change(WebhookEvent, event.pk),
                "kind": EVENT_WORDS.get(event.event_type, event.event_type),
                "received": when(event.received_at),
                "about": about(event.raw_body),
                "outcome": event.get_outcome_display(),
                "todo": NEEDS_A_LOOK[event.outcome].format(pk=event.pk),
                "next_try": next_try(event.verify_after, now)
                if event.outcome == WebhookEvent.Outcome.PENDING
                else "",
            }
            for event in rows
        ],
    }


# What a stored body says its delivery is about, and how each is shown. Never a customer's name, phone or
# email: only these fields are read.
ABOUT = [("metadata1", "order"), ("referenceNumber", "reference"), ("ecommerceId", "ecommerceId")]
_SHOWN = 100


def about(raw_body: str) -> dict[str, str] | None:
    """``{"order", "reference", "ecommerceId", "total"}`` as a stored body gives them (empty where it does
    not), or None for a body that cannot be read: purged (empty), not JSON, not a JSON object."""
    try:
        data = json.loads(raw_body, parse_float=Decimal) if raw_body else None
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return None
    found = {name: _scalar(data.get(field)) for field, name in ABOUT}
    found["total"] = _total(data.get("total"))
    return found


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        return ""
    text = str(value).strip()
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _total(value: Any) -> str:
    text = _scalar(value)
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return text
    return money(amount) if amount.is_finite() else text


def _unfinished(links: _Links, now: datetime) -> dict[str, Any]:
    """Notices not yet delivered to every receiver: how many, since when, and the oldest of them."""
    pending = Notice.objects.filter(delivered_at=None)
    totals = pending.aggregate(count=Count("id"), oldest=Min("created_at"))
    rows = (
        pending.select_related("payment")
        .only(
            "id",
            "signal",
            "receivers",
            "created_at",
            "attempts",
            "next_attempt_at",
            "payment__id",
            "payment__reference_number",
            "payment__ecommerce_id",
            "payment__metadata_1",
        )
        .order_by("id")[:UNFINISHED]
    )
    return {
        "count": totals["count"],
        "oldest": when(totals["oldest"]),
        "list_url": links.changelist(Notice, "?delivered_at__isempty=1"),
        "rows": [
            {
                "url": links.change(Notice, notice.pk),
                "change": CHANGE_WORDS.get(notice.signal, notice.signal.replace("_", " ")),
                "payment": _payment_label(notice.payment),
                "payment_url": links.change(Payment, notice.payment_id),
                "since": when(notice.created_at),
                "next_try": next_try(notice.next_attempt_at, now),
                "receivers": _receivers_left(notice),
            }
            for notice in rows
        ],
    }


def _receivers_left(notice: Notice) -> list[dict[str, str]]:
    """The receivers that have not handled a notice: failed ones with their error, the others not run."""
    left = []
    for entry in notice.receivers or []:
        if not isinstance(entry, dict):
            continue
        state = entry.get("state")
        if state == Notice.ReceiverState.FAILED:
            attempts = int(entry.get("attempts") or 0)
            tries = f"failed, {attempts} tr{'y' if attempts == 1 else 'ies'}"
            error = last_line(entry.get("error", ""))
            left.append({"receiver": entry.get("receiver", "?"), "state": tries, "error": error})
        elif state == Notice.ReceiverState.PENDING:
            left.append({"receiver": entry.get("receiver", "?"), "state": "not run yet", "error": ""})
    return left


def _waiting(links: _Links, now: datetime) -> dict[str, Any]:
    """Outbox messages not yet published: how many, since when, and the oldest of them."""
    pending = OutboxMessage.objects.filter(published_at=None)
    totals = pending.aggregate(count=Count("id"), oldest=Min("created_at"))
    rows = pending.only(
        "id", "event_type", "created_at", "attempts", "last_error", "next_attempt_at"
    ).order_by("id")[:UNFINISHED]
    return {
        "count": totals["count"],
        "oldest": when(totals["oldest"]),
        # Without a topic (ATHM_OUTBOX off) nothing is written to wait: no line about SNS at all.
        "publishing": athm_settings.ATHM_OUTBOX,
        "list_url": links.changelist(OutboxMessage, "?published_at__isempty=1"),
        "rows": [
            {
                "url": links.change(OutboxMessage, message.pk),
                "change": CHANGE_WORDS.get(message.event_type, message.event_type.replace("_", " ")),
                "since": when(message.created_at),
                "attempts": message.attempts,
                "error": last_line(message.last_error),
                "next_try": next_try(message.next_attempt_at, now),
            }
            for message in rows
        ],
    }
