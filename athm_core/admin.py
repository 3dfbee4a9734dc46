"""A read-only Django admin for payments, refunds, webhook events and the outbox.

Rows change only through ATH Móvil's events (see :mod:`athm_core.processor`), so nobody adds, edits or
deletes them here.
"""

from django.contrib import admin

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
    list_display = ["id", "received_at", "event_type", "outcome", "idempotency_key", "source_ip"]
    list_filter = ["outcome", "event_type", "received_at"]
    search_fields = ["idempotency_key", "request_id"]
    date_hierarchy = "received_at"


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "event_type", "transaction_type", "published_at", "attempts"]
    list_filter = [("published_at", admin.EmptyFieldListFilter), "event_type", "created_at"]
    search_fields = ["event_id", "group_key", "published_message_id"]
    date_hierarchy = "created_at"
