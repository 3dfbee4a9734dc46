"""A read-only Django admin for payments, refunds, webhook events and the outbox.

Rows change only through ATH Móvil's events (see :mod:`athm_core.processor`), so nobody adds, edits or
deletes them here. Superusers have two actions on webhook events, the same as ``athm reprocess`` and
``athm redispatch`` (see :mod:`athm_core.replay`): each records a new attempt or re-sends missed signals,
and neither edits a row by hand. Reprocessing here takes the same path as a new delivery, ATH Móvil's
verification included (``ATHM_VERIFIER``).
"""

from django.contrib import admin, messages

from athm_core import replay
from athm_core.models import OutboxMessage, Payment, Refund, WebhookEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class RefundInline(admin.TabularInline):
    model = Refund
    fields = ["reference_number", "amount", "transaction_date", "linked_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = [
        "reference_number",
        "ecommerce_id",
        "transaction_type",
        "status",
        "total",
        "total_refunded_amount",
        "metadata_1",
        "transaction_date",
    ]
    list_filter = ["status", "transaction_type", "transaction_date"]
    search_fields = ["reference_number", "ecommerce_id", "metadata_1", "metadata_2"]
    date_hierarchy = "transaction_date"
    inlines = [RefundInline]


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ["reference_number", "amount", "payment", "transaction_date", "linked_at"]
    list_filter = [("payment", admin.EmptyFieldListFilter), "transaction_date"]
    search_fields = ["reference_number"]


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "received_at",
        "event_type",
        "outcome",
        "failed_receivers",
        "idempotency_key",
        "source_ip",
    ]
    list_filter = ["outcome", "event_type", "received_at"]
    search_fields = ["idempotency_key", "request_id"]
    date_hierarchy = "received_at"
    actions = ["reprocess_selected", "redispatch_selected"]

    @admin.display(description="failed receivers")
    def failed_receivers(self, event: WebhookEvent) -> int:
        return len(event.receiver_errors or [])

    def has_replay_permission(self, request) -> bool:
        # They apply events and call receivers again: the same power as the athm command line.
        return request.user.is_active and request.user.is_superuser

    @admin.action(description="Reprocess selected events", permissions=["replay"])
    def reprocess_selected(self, request, queryset):
        self._report(request, replay.reprocess(queryset.order_by("received_at", "pk")), "reprocessed")

    @admin.action(description="Re-send signals to failed receivers", permissions=["replay"])
    def redispatch_selected(self, request, queryset):
        self._report(request, replay.redispatch(queryset.order_by("received_at", "pk")), "redispatched")

    def _report(self, request, results: list[replay.Result], verb: str) -> None:
        bad = {replay.REFUSED, replay.STILL_FAILING, WebhookEvent.Outcome.FAILED}
        for result in results:
            level = messages.WARNING if result.status in bad else messages.SUCCESS
            self.message_user(request, str(result), level)
        self.message_user(request, f"{len(results)} event(s) {verb}", messages.INFO)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "event_type", "transaction_type", "published_at", "attempts"]
    list_filter = [("published_at", admin.EmptyFieldListFilter), "event_type", "created_at"]
    search_fields = ["event_id", "group_key", "published_message_id"]
    date_hierarchy = "created_at"
