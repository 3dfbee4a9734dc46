"""A read-only Django admin for payments, refunds, webhook events, their notices and the outbox.

Rows change only through ATH Móvil's events (see :mod:`athm_core.processor`) and the deliveries of their
notices (:mod:`athm_core.dispatch`), so nobody adds, edits or deletes them here. An event's page lists its
notices with each receiver's state; the notices have a list of their own, to find the unfinished ones.

Superusers have two actions on webhook events, the same as ``athm reprocess`` and ``athm redispatch``
(see :mod:`athm_core.replay`): one records a new attempt, the other delivers the events' unfinished notices
now, and neither edits a row by hand. Reprocessing here takes the same path as a new delivery, ATH Móvil's
verification included (``ATHM_VERIFIER``). On payments, superusers can refund through ATH Móvil
(:func:`athm_core.refunds.refund`, as ``athm refund``), after a confirmation page that shows what each
payment can still be refunded.

Payments have two actions that ask ATH Móvil, the same as ``athm find_payment`` (see
:mod:`athm_core.ath.lookup`): "Check with ATH Móvil", for whoever may view payments, says per payment how
findPayment's answer differs from the row and changes nothing; "Apply what ATH Móvil says", for superusers,
records a completion the database missed through the processor, and nothing else. A payment's page shows
its deliveries as a timeline and its refundable amount; payments are found by the customer's name, phone
and email too.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.db.models import Prefetch
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from athm_core import refunds, replay
from athm_core.ath import lookup
from athm_core.ath.client import AthmApiError
from athm_core.models import Notice, OutboxMessage, Payment, Refund, WebhookEvent

State = Notice.ReceiverState


class DatesInPythonChangeList(ChangeList):
    """A list without the links of its date drill-down (``date_hierarchy``), whose query groups rows by
    local date in SQL: for a database that cannot (:func:`local_dates_in_sql`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Set after the filtering: a drill-down's own parameters still filter (by ranges made in Python).
        self.date_hierarchy = None


_local_dates_in_sql: bool | None = None


def local_dates_in_sql() -> bool:
    """Whether the database can turn UTC times into local dates. MySQL and MariaDB can once their time zone
    tables are loaded (``mariadb-tzinfo-to-sql``); without them, a list's ``date_hierarchy`` fails the page.
    Asked once per process."""
    global _local_dates_in_sql
    if _local_dates_in_sql is None:
        if connection.vendor != "mysql":
            _local_dates_in_sql = True
        else:
            with connection.cursor() as cursor:
                zone = timezone.get_current_timezone_name()
                cursor.execute("SELECT CONVERT_TZ('2000-01-01 00:00:00', 'UTC', %s)", [zone])
                _local_dates_in_sql = cursor.fetchone()[0] is not None
    return _local_dates_in_sql


class ReadOnlyAdmin(admin.ModelAdmin):
    def get_changelist(self, request, **kwargs):
        if self.date_hierarchy and not local_dates_in_sql():
            return DatesInPythonChangeList
        return super().get_changelist(request, **kwargs)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- a notice's receivers, for people ---------------------------------------------------------------------


def _entries(notice: Notice) -> list[dict]:
    return [entry for entry in notice.receivers or [] if isinstance(entry, dict)]


def _when(value) -> str:
    """A receiver's ``last_attempt_at`` (ISO text) in local time, to the second."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if timezone.is_aware(moment):
        moment = timezone.localtime(moment)
    return f"{moment:%Y-%m-%d %H:%M:%S}"


def _attempts(entry: dict) -> str:
    attempts = int(entry.get("attempts") or 0)
    if not attempts:
        return "not called yet"
    text = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    if entry.get("last_attempt_at"):
        text += f", last {_when(entry['last_attempt_at'])}"
    return text


def _last_line(error: str) -> str:
    """A traceback's last line: the exception and its message."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def summary(notice: Notice) -> str:
    """How many of a notice's receivers are in each state: "2 delivered, 1 failed"."""
    states = Counter(str(entry.get("state", "?")) for entry in _entries(notice))
    if not states:
        return "no receivers"
    order = [State.DELIVERED, State.FAILED, State.PENDING]
    known = [f"{states.pop(state)} {state}" for state in order if state in states]
    return ", ".join(known + [f"{count} {state}" for state, count in sorted(states.items())])


def receiver_lines(notice: Notice, *, tracebacks: bool):
    """One line per receiver: its name, state and attempts; for a failure, the exception (``tracebacks``:
    the whole traceback)."""
    entries = _entries(notice)
    if not entries:
        return "no receivers"
    lines = []
    for entry in entries:
        line = format_html(
            "<strong>{}</strong>: {} ({})",
            entry.get("receiver", "?"),
            entry.get("state", "?"),
            _attempts(entry),
        )
        error = entry.get("error") or ""
        if error and tracebacks:
            line = format_html("{}<pre>{}</pre>", line, error.rstrip())
        elif error:
            line = format_html("{}: {}", line, _last_line(error))
        lines.append((line,))
    return format_html_join("", "<div>{}</div>", lines)


# --- payments and refunds ---------------------------------------------------------------------------------


class RefundInline(ReadOnlyInline):
    model = Refund
    fields = [
        "reference_number",
        "amount",
        "status",
        "transaction_date",
        "linked_at",
        "refund_reference_number",
    ]
    readonly_fields = fields


class _HasEntriesFilter(admin.SimpleListFilter):
    """Rows whose JSON list ``title`` (a field of the same name) has entries, or has none."""

    def lookups(self, request, model_admin):
        return [("yes", f"With {self.title}"), ("no", f"Without {self.title}")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(**{self.title: []})
        if self.value() == "no":
            return queryset.filter(**{self.title: []})
        return queryset


class HasWarningsFilter(_HasEntriesFilter):
    """Deliveries whose descriptive fields were cleaned to be stored (``WebhookEvent.warnings``)."""

    title = "warnings"
    parameter_name = "has_warnings"


class HasAnomaliesFilter(_HasEntriesFilter):
    """Deliveries, or payments, flagged with money that cannot be right (``anomalies``)."""

    title = "anomalies"
    parameter_name = "has_anomalies"


def _digits(text: str) -> str:
    return "".join(character for character in text if character.isdigit() and character.isascii())


# A search term with at least this many digits is also looked for among the phones, as digits.
_PHONE_DIGITS = 4


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = [
        "reference_number",
        "ecommerce_id",
        "transaction_type",
        "status",
        "total",
        "total_refunded_amount",
        "name",
        "metadata_1",
        "transaction_date",
    ]
    list_filter = ["status", "transaction_type", HasAnomaliesFilter, "transaction_date", "created_at"]
    search_fields = [
        "reference_number",
        "ecommerce_id",
        "metadata_1",
        "metadata_2",
        "name",
        "phone_number",
        "email",
    ]
    search_help_text = (
        "A reference number, an ecommerceId, metadata, or a customer's name, phone (written any way) or email"
    )
    date_hierarchy = "transaction_date"
    readonly_fields = ["refundable_amount", "deliveries"]
    inlines = [RefundInline]
    actions = ["check_with_ath", "apply_from_ath", "refund_selected"]

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        # Phones are stored as digits ("9395550177"): "(939) 555-0177" finds them too.
        digits = _digits(search_term)
        if len(digits) >= _PHONE_DIGITS and digits != search_term.strip():
            results |= queryset.filter(phone_number__contains=digits)
        return results, may_have_duplicates

    @admin.display(description="refundable amount")
    def refundable_amount(self, payment: Payment):
        return payment.refundable_amount

    @admin.display(description="deliveries (webhook events), oldest first")
    def deliveries(self, payment: Payment):
        """The payment's story: every delivery that touched it, in the order received, each with its
        outcome, where it came from, and a link to it."""
        events = payment.webhook_events.order_by("received_at", "id")
        lines = []
        for event in events:
            origin = ", ".join(part for part in (event.request_id, event.source_ip or "") if part)
            reason = f" — {_last_line(event.error)[:120]}" if event.error else ""
            lines.append(
                (
                    reverse("admin:athm_core_webhookevent_change", args=[event.pk]),
                    f"{timezone.localtime(event.received_at):%Y-%m-%d %H:%M:%S}",
                    f"{event.event_type or 'unreadable event'}: {event.outcome}",
                    f" ({origin})" if origin else "",
                    reason,
                )
            )
        if not lines:
            return self.get_empty_value_display()
        items = format_html_join("", '<li><a href="{}">{}</a> {}{}{}</li>', lines)
        return format_html('<ol class="athm-timeline">{}</ol>', items)

    # --- asking ATH Móvil (athm_core.ath.lookup; the same as `athm find_payment`) ---

    def has_apply_permission(self, request) -> bool:
        # It records a payment's completion, signals and SNS message included: the command line's power.
        return request.user.is_active and request.user.is_superuser

    @admin.action(description="Check with ATH Móvil", permissions=["view"])
    def check_with_ath(self, request, queryset):
        for payment in queryset.order_by("pk"):
            found = self._look_up(request, payment)
            if found is None:
                continue
            differences = [field for field in found.fields if field.differs]
            if not differences:
                self.message_user(
                    request, f"payment {payment.pk}: ATH Móvil agrees ({found.ath_status})", messages.SUCCESS
                )
                continue
            text = "; ".join(
                f"{field.name} ATH Móvil {field.ath}, recorded {field.recorded}" for field in differences
            )
            if found.missed_completion:
                text += "; a completion this database missed: “Apply what ATH Móvil says” records it"
            self.message_user(request, f"payment {payment.pk}: {text}", messages.WARNING)

    @admin.action(description="Apply what ATH Móvil says (a missed completion only)", permissions=["apply"])
    def apply_from_ath(self, request, queryset):
        for payment in queryset.order_by("pk"):
            found = self._look_up(request, payment)
            if found is None:
                continue
            applied, text = lookup.apply(found)
            level = messages.SUCCESS if applied else messages.INFO
            self.message_user(request, f"payment {payment.pk}: {text}", level)

    def _look_up(self, request, payment: Payment) -> lookup.Lookup | None:
        """ATH's answer beside ``payment``, or ``None`` with a message saying why there is none."""
        if not payment.ecommerce_id:
            self.message_user(
                request,
                f"payment {payment.pk}: a {payment.get_transaction_type_display()} with no ecommerceId: "
                "findPayment knows eCommerce checkouts only",
                messages.WARNING,
            )
            return None
        try:
            return lookup.look_up(payment.ecommerce_id, payment=payment)
        except (ValueError, ImproperlyConfigured, lookup.LookupFailed) as exc:
            self.message_user(request, f"payment {payment.pk}: {exc}", messages.ERROR)
            return None

    # --- refunds (athm_core.refunds; the same as `athm refund`) ---

    def has_refund_permission(self, request) -> bool:
        # It sends money back through ATH Móvil: the same power as `athm refund`.
        return request.user.is_active and request.user.is_superuser

    @admin.action(description="Refund through ATH Móvil", permissions=["refund"])
    def refund_selected(self, request, queryset):
        payments = list(queryset.order_by("pk"))
        if request.POST.get("post") != "yes":
            rows = []
            for payment in payments:
                left = refunds.refundable(payment)
                rows.append(
                    {
                        "payment": payment,
                        "refundable": left,
                        "pending": payment.refundable_amount - left,
                        "refunds_seen": _refunds_of(payment),
                        "unanswered": payment.refunds.filter(status=Refund.Status.PENDING).first(),
                    }
                )
            context = {
                **self.admin_site.each_context(request),
                "title": "Refund through ATH Móvil?",
                "rows": rows,
                "message_limit": refunds.MESSAGE_LIMIT,
                "opts": self.model._meta,
            }
            return TemplateResponse(request, "athm_core/refund_confirmation.html", context)
        amount = request.POST.get("amount", "").strip() or None
        if amount is not None and len(payments) != 1:
            self.message_user(request, "an amount refunds one payment: select one", messages.ERROR)
            return None
        message = request.POST.get("message", "")
        for payment in payments:
            seen = request.POST.get(f"refunds_seen_{payment.pk}")
            if seen != str(_refunds_of(payment)):
                # A second submit of the page (a double click, the back button), or a refund made since it
                # was shown: what the page said is no longer true, so nothing is sent.
                self.message_user(
                    request,
                    f"payment {payment} not refunded: its refunds changed since the confirmation page was "
                    f"shown (or the page was sent twice); nothing was sent, select it again to see them",
                    messages.ERROR,
                )
                continue
            try:
                refund = refunds.refund(payment, amount, message)
            except refunds.RefundPending as exc:
                self.message_user(request, f"payment {payment}: {exc}", messages.WARNING)
            except (refunds.RefundError, ImproperlyConfigured) as exc:
                self.message_user(request, f"payment {payment} not refunded: {exc}", messages.ERROR)
            else:
                made = (
                    f"payment {payment}: refunded {refund.amount} (refund {refund.pk}, ATH Móvil reference "
                    f"number {refund.refund_reference_number or '(not in its answer)'})"
                )
                flagged = getattr(refund, "flagged", [])
                if flagged:
                    said = "; ".join(f"{each['kind']}: {each['detail']}" for each in flagged)
                    made += f", but ATH Móvil's answer is not what was asked ({said}): flagged on the payment"
                self.message_user(request, made, messages.WARNING if flagged else messages.SUCCESS)
        return None


def _refunds_of(payment: Payment) -> int:
    """How many refunds of ``payment`` are recorded, whatever their state: shown with the refund action's
    confirmation page and compared when it is sent, so that one page refunds at most once."""
    return Refund.objects.filter(payment=payment).count()


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "reference_number",
        "refund_reference_number",
        "amount",
        "status",
        "payment",
        "transaction_date",
        "linked_at",
    ]
    list_filter = [("payment", admin.EmptyFieldListFilter), "status", "transaction_date"]
    search_fields = ["reference_number", "refund_reference_number"]
    actions = ["check_pending"]

    def has_refund_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    @admin.action(
        description="Check pending refunds with ATH Móvil (athm refund --check)", permissions=["refund"]
    )
    def check_pending(self, request, queryset):
        for refund in queryset.order_by("pk"):
            try:
                checked = refunds.check(refund.pk)
            except (refunds.RefundError, ImproperlyConfigured, AthmApiError) as exc:
                self.message_user(request, f"refund {refund.pk}: {exc}", messages.ERROR)
                continue
            if checked.status == Refund.Status.PENDING:
                self.message_user(
                    request,
                    f"refund {refund.pk}: ATH Móvil's report does not list it yet; it stays pending (its "
                    "webhook or a later check settles it; `athm refund --fail` once ATH Business shows it "
                    "never happened)",
                    messages.WARNING,
                )
            else:
                self.message_user(request, f"refund {refund.pk} is {checked.status}", messages.SUCCESS)


# --- webhook events and their notices ---------------------------------------------------------------------


class NoticeInline(ReadOnlyInline):
    model = Notice
    fk_name = "webhook_event"
    fields = ["signal", "receiver_states", "attempts", "next_attempt", "delivered_at"]
    readonly_fields = fields
    verbose_name_plural = "notices (the signals this event sent, and what each receiver did)"

    @admin.display(description="receivers")
    def receiver_states(self, notice: Notice):
        return receiver_lines(notice, tracebacks=False)

    @admin.display(description="next attempt at")
    def next_attempt(self, notice: Notice) -> str:
        # A delivered notice is never tried again.
        value = None if notice.delivered_at else notice.next_attempt_at
        return display_for_value(value, self.get_empty_value_display())


class VerificationFilter(admin.SimpleListFilter):
    """Deliveries kept ``pending`` because ATH Móvil could not confirm them yet: still waiting for the relay,
    or settled since (``settled_by``: the delivery that applied or rejected them)."""

    title = "pending verification"
    parameter_name = "verification"

    def lookups(self, request, model_admin):
        return [("waiting", "Still waiting for ATH Móvil"), ("settled", "Settled since")]

    def queryset(self, request, queryset):
        pending = queryset.filter(outcome=WebhookEvent.Outcome.PENDING)
        if self.value() == "waiting":
            return pending.filter(settled_by=None)
        if self.value() == "settled":
            return pending.exclude(settled_by=None)
        return queryset


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "received_at",
        "event_type",
        "outcome",
        "failed_receivers",
        "warning_count",
        "idempotency_key",
        "source_ip",
    ]
    list_filter = [
        "outcome",
        VerificationFilter,
        HasWarningsFilter,
        HasAnomaliesFilter,
        "event_type",
        "received_at",
    ]
    readonly_fields = ["warning_lines", "settled_by"]
    search_fields = ["idempotency_key", "request_id"]
    date_hierarchy = "received_at"
    inlines = [NoticeInline]
    actions = ["reprocess_selected", "redispatch_selected"]

    def get_queryset(self, request):
        # The unfinished notices of every event listed, in one query: only they can have failed receivers.
        unfinished = Notice.objects.filter(delivered_at=None).order_by("id")
        return (
            super()
            .get_queryset(request)
            .prefetch_related(Prefetch("notices", queryset=unfinished, to_attr="unfinished_notices"))
        )

    @admin.display(description="warnings")
    def warning_count(self, event: WebhookEvent) -> int:
        return len(event.warnings or [])

    @admin.display(description="what was cleaned to store it")
    def warning_lines(self, event: WebhookEvent):
        lines = [(entry.get("field", ""), entry.get("warning", "")) for entry in event.warnings or []]
        if not lines:
            return self.get_empty_value_display()
        return format_html("<ul>{}</ul>", format_html_join("", "<li><b>{}</b>: {}</li>", lines))

    @admin.display(description="failed receivers")
    def failed_receivers(self, event: WebhookEvent) -> int:
        notices = getattr(event, "unfinished_notices", None)
        if notices is None:
            notices = event.notices.filter(delivered_at=None)
        return sum(len(notice.failures()) for notice in notices)

    def has_replay_permission(self, request) -> bool:
        # They apply events and call receivers again: the same power as the athm command line.
        return request.user.is_active and request.user.is_superuser

    @admin.action(description="Reprocess selected events", permissions=["replay"])
    def reprocess_selected(self, request, queryset):
        self._report(request, replay.reprocess(queryset.order_by("received_at", "pk")), "reprocessed")

    @admin.action(description="Deliver unfinished notices now", permissions=["replay"])
    def redispatch_selected(self, request, queryset):
        self._report(request, replay.redispatch(queryset.order_by("received_at", "pk")), "redispatched")

    def _report(self, request, results: list[replay.Result], verb: str) -> None:
        bad = {replay.REFUSED, replay.STILL_FAILING, WebhookEvent.Outcome.FAILED}
        for result in results:
            level = messages.WARNING if result.status in bad else messages.SUCCESS
            self.message_user(request, str(result), level)
        self.message_user(request, f"{len(results)} event(s) {verb}", messages.INFO)


@admin.register(Notice)
class NoticeAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "signal", "payment", "delivered_at", "attempts", "receivers_summary"]
    list_filter = [("delivered_at", admin.EmptyFieldListFilter), "signal", "created_at"]
    list_select_related = ["payment"]
    search_fields = ["notice_id", "payment__reference_number", "payment__ecommerce_id"]
    date_hierarchy = "created_at"
    fields = [
        "notice_id",
        "signal",
        "payment",
        "refund",
        "webhook_event",
        "created_at",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "receiver_details",
    ]
    readonly_fields = fields

    @admin.display(description="receivers")
    def receivers_summary(self, notice: Notice) -> str:
        return summary(notice)

    @admin.display(description="receivers")
    def receiver_details(self, notice: Notice):
        return receiver_lines(notice, tracebacks=True)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "event_type", "transaction_type", "published_at", "attempts"]
    list_filter = [("published_at", admin.EmptyFieldListFilter), "event_type", "created_at"]
    search_fields = ["event_id", "group_key", "published_message_id"]
    date_hierarchy = "created_at"
