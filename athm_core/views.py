"""The overview: one read-only page where a merchant sees what ATH Móvil sent and what came of it, in plain
words, without knowing the admin's lists and filters.

It shows the latest payments (status, total, reference number, date, customer), the latest refunds, the
latest webhooks ATH Móvil delivered with their outcome and any error, and what is still unfinished: changes
that a receiver of the merchant's has failed or not yet run (their notices), and messages still waiting to
be published to SNS (the outbox), with how many and since when. Each row links to its page in the admin.

Mount it behind the admin's login, staff only, in the admin's look (``handler.urls`` does)::

    path("admin/overview/", admin.site.admin_view(overview), name="athm_overview")

Money is shown in dollars and cents, times in the project's time zone (Puerto Rico's, in
``handler.settings``). The page costs the same few queries however many rows there are: each list is
bounded, its columns chosen, and what a row links to is read in the same query.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.contrib.admin.sites import AdminSite
from django.db.models import Count, Min, Model
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

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


def overview(request: HttpRequest, site: AdminSite = admin.site) -> TemplateResponse:
    """The overview page. Shows a section only to a user who may view its rows in ``site``."""
    links = _Links(request, site)
    context: dict[str, Any] = {
        **site.each_context(request),
        "title": "Overview",
        "subtitle": None,
        "time_zone": timezone.get_current_timezone_name(),
    }
    if links.can_view(Payment):
        context["payments"] = _payments(links)
    if links.can_view(Refund):
        context["refunds"] = _refunds(links)
    if links.can_view(WebhookEvent):
        context["webhooks"] = _webhooks(links)
    if links.can_view(Notice):
        context["unfinished"] = _unfinished(links)
    if links.can_view(OutboxMessage):
        context["waiting"] = _waiting(links)
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
            "transaction_date",
            "created_at",
        )
        .order_by("-created_at", "-id")
        .all()[:LATEST]
    )
    return [
        {
            "url": links.change(Payment, payment.pk),
            "reference_number": payment.reference_number or "",
            "ecommerce_id": payment.ecommerce_id or "",
            "kind": payment.get_transaction_type_display(),
            "status": payment.get_status_display(),
            "status_value": payment.status,
            "total": money(payment.total),
            "refunded": money(payment.total_refunded_amount) if payment.total_refunded_amount else "",
            "customer": payment.name,
            "date": when(payment.transaction_date or payment.created_at),
        }
        for payment in rows
    ]


def _refunds(links: _Links) -> list[dict[str, Any]]:
    rows = (
        Refund.objects.only(
            "id", "payment_id", "reference_number", "amount", "transaction_date", "name", "created_at"
        )
        .order_by("-created_at", "-id")
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
            "matched": refund.payment_id is not None,
        }
        for refund in rows
    ]


def _webhooks(links: _Links) -> list[dict[str, Any]]:
    rows = (
        WebhookEvent.objects.only("id", "received_at", "event_type", "outcome", "error", "payment_id")
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
        }
        for event in rows
    ]


def _unfinished(links: _Links) -> dict[str, Any]:
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
                "payment": str(notice.payment),
                "payment_url": links.change(Payment, notice.payment_id),
                "since": when(notice.created_at),
                "next_try": when(notice.next_attempt_at),
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


def _waiting(links: _Links) -> dict[str, Any]:
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
                "next_try": when(message.next_attempt_at),
            }
            for message in rows
        ],
    }
