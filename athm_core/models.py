"""The rows ATH Móvil's events keep: payments, refunds, the raw webhook deliveries themselves, the notices
that tell the receivers of each change, and the outbox of business events waiting to be published.

Read them anywhere; who writes them:

- ``Payment`` and ``Refund``: :mod:`athm_core.processor` only.
- ``WebhookEvent``: recorded by :mod:`athm_core.processor`; emptied by the retention purge
  (:mod:`athm_core.retention`).
- ``Notice``: written by :mod:`athm_core.processor` with the change it announces; its per-receiver state by
  :mod:`athm_core.dispatch`; deleted by the retention purge once delivered.
- ``OutboxMessage``: written by :mod:`athm_core.processor`, marked published or failed by a publisher
  through :mod:`athm_core.outbox`, deleted by the retention purge once published.

Money is ``Decimal`` exact to the cent; times are aware datetimes (stored in UTC, shown in Puerto Rico time).
"""

import uuid
from decimal import Decimal

from django.db import models


def _money(verbose_name: str, **options) -> models.DecimalField:
    return models.DecimalField(verbose_name, max_digits=12, decimal_places=2, **options)


class CustomerAliases:
    """The customer's fields under django-athm's names, read-only, for receivers written against it
    (docs/migrating-from-django-athm.md): ``customer_name`` is ``name``, ``customer_phone``
    ``phone_number``, ``customer_email`` ``email``."""

    @property
    def customer_name(self) -> str:
        return self.name

    @property
    def customer_phone(self) -> str:
        return self.phone_number

    @property
    def customer_email(self) -> str:
        return self.email


class Payment(CustomerAliases, models.Model):
    """A transaction that paid the business: an eCommerce checkout, an app payment or a donation."""

    class TransactionType(models.TextChoices):
        ECOMMERCE = "ecommerce", "eCommerce"
        PAYMENT = "payment", "Payment (pay a business)"
        DONATION = "donation", "Donation"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"

    # django-athm's name for a cancelled checkout: CANCELLED itself (the same stored value), so that its
    # users' ``payment.status == Payment.Status.CANCEL`` keeps working; not a choice of its own (Django's
    # choices refuse two members of one value, so it is set beside the members, not among them).
    Status.CANCEL = Status.CANCELLED

    transaction_type = models.CharField(max_length=16, choices=TransactionType.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    ecommerce_id = models.CharField("eCommerce id", max_length=100, unique=True, null=True, blank=True)
    reference_number = models.CharField(max_length=100, unique=True, null=True, blank=True)
    daily_transaction_id = models.PositiveIntegerField(null=True, blank=True)
    # For an eCommerce checkout's event that names neither an ecommerceId nor a reference number (a
    # cancelled or expired checkout in ATH Móvil's published shape): a digest of what the event says, so
    # that its redelivery finds this payment. Null for every other payment.
    fingerprint = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)

    total = _money("total")
    subtotal = _money("subtotal", null=True, blank=True)
    tax = _money("tax", null=True, blank=True)
    fee = _money("fee", null=True, blank=True)
    net_amount = _money("net amount", null=True, blank=True)
    total_refunded_amount = _money("total refunded", default=Decimal("0.00"))

    metadata_1 = models.CharField(max_length=255, blank=True)
    metadata_2 = models.CharField(max_length=255, blank=True)
    items = models.JSONField(default=list, blank=True)
    business_name = models.CharField(max_length=255, blank=True)

    name = models.CharField("customer name", max_length=255, blank=True)
    phone_number = models.CharField("customer phone", max_length=40, blank=True)
    email = models.CharField("customer email", max_length=255, blank=True)
    message = models.TextField("customer message", blank=True)

    transaction_date = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Money that cannot be right, recorded as ATH Móvil sent it and flagged here (see processor.ANOMALIES):
    # ``[{"kind": "over_refund", "detail": "...", "at": "2026-11-30T08:00:00-04:00", "event_type": ...}]``.
    anomalies = models.JSONField(default=list, blank=True)
    # When ATH Móvil last confirmed this payment (findPayment, or the transaction report); null: recorded
    # from a body nobody could check. A confirmed event wins over an unconfirmed payment's reference number.
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "-created_at"], name="athm_payment_status_idx")]

    def __str__(self) -> str:
        return self.reference_number or self.ecommerce_id or f"payment {self.pk}"

    # Read-only aliases under django-athm's names, for receivers written against it
    # (docs/migrating-from-django-athm.md); the customer's are CustomerAliases'.

    @property
    def is_successful(self) -> bool:
        """Whether the payment completed: money reached the business."""
        return self.status == self.Status.COMPLETED

    @property
    def is_refundable(self) -> bool:
        """Whether some of it can still be refunded: completed, and refunded less than its total."""
        return self.is_successful and self.total > self.total_refunded_amount

    @property
    def refundable_amount(self) -> Decimal:
        """What can still be refunded: the total less every refund recorded against it, for a completed
        payment; ``0.00`` for one that never completed or is refunded whole (or more: an ``over_refund``).
        Refunds still pending at ATH Móvil are not counted here; :func:`athm_core.refunds.refundable`
        counts them."""
        if not self.is_refundable:
            return Decimal("0.00")
        return self.total - self.total_refunded_amount


class Refund(CustomerAliases, models.Model):
    """Money sent back to a customer. ``payment`` is empty until the refund can be tied to its payment.

    A refund heard of from ATH Móvil (a Refund Sent webhook, the transaction report) is ``completed``. A
    refund this system asked ATH Móvil for (:mod:`athm_core.refunds`) is written ``pending`` before the
    request (``requested_at`` set, its ``idempotency_key`` one of :data:`REQUESTED_KEY_PREFIX`), tied to its
    payment from the start, and then completed by ATH's answer, its Refund Sent webhook or the transaction
    report, whichever comes first, or marked ``failed`` when ATH Móvil refused it (``error`` says why).
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (asked of ATH Móvil, no answer yet)"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed (ATH Móvil refused it)"

    payment = models.ForeignKey(
        Payment, on_delete=models.PROTECT, related_name="refunds", null=True, blank=True
    )
    reference_number = models.CharField(max_length=100, db_index=True)
    daily_transaction_id = models.PositiveIntegerField(null=True, blank=True)
    amount = _money("amount")
    transaction_date = models.DateTimeField()

    name = models.CharField("customer name", max_length=255, blank=True)
    phone_number = models.CharField("customer phone", max_length=40, blank=True)
    email = models.CharField("customer email", max_length=255, blank=True)
    message = models.TextField(blank=True)

    # Refunds may share a reference number, so their identity is the whole event's.
    idempotency_key = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    linked_at = models.DateTimeField(null=True, blank=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETED)
    # A refund this system asked ATH Móvil for: when it asked (null for refunds only heard of), the refund's
    # own reference number and the original transaction's, as ATH's answer named them, and why it failed
    # or is pending. (``reference_number`` stays the one ATH's deliveries name it by: the payment's until
    # its Refund Sent event is matched, then that event's.)
    requested_at = models.DateTimeField(null=True, blank=True)
    refund_reference_number = models.CharField(max_length=100, blank=True)
    original_reference_number = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["payment", "status"], name="athm_refund_status_idx")]

    def __str__(self) -> str:
        return f"refund {self.amount} of {self.reference_number}"

    @property
    def claimed(self) -> bool:
        """Whether a delivery (webhook or report row) of ATH Móvil's has been matched to this refund."""
        return not self.idempotency_key.startswith(REQUESTED_KEY_PREFIX)


# The idempotency key of a refund this system asked for, until its Refund Sent event (webhook or report
# row) is matched to it and gives it that event's key.
REQUESTED_KEY_PREFIX = "requested:"


class WebhookEvent(models.Model):
    """One webhook request as it was received, and what came of it. Never changed by later requests."""

    class Outcome(models.TextChoices):
        APPLIED = "applied", "Applied"
        DUPLICATE = "duplicate", "Duplicate (already applied)"
        IGNORED = "ignored", "Ignored (arrived after a final state)"
        SIMULATED = "simulated", "Simulated (test button)"
        INVALID = "invalid", "Invalid payload"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected (contradicts ATH Móvil or a recorded payment)"
        # Kept, not applied: verification is on and ATH Móvil cannot confirm this event (an eCommerce event
        # without an ecommerceId, whose reference number the transaction report does not list or cannot
        # be asked about). Reprocess it once it can be confirmed.
        UNVERIFIED = "unverified", "Unverified (kept, not applied: ATH Móvil cannot confirm it)"
        # Kept, not applied yet: ATH Móvil could not be asked (unreachable, slow, an error). The relay asks
        # again (``verify_after``) until it answers, and ``settled_by`` is the delivery that then settled it.
        PENDING = "pending", "Pending verification (kept: ATH Móvil could not be asked yet)"

    received_at = models.DateTimeField(db_index=True)
    request_id = models.CharField("API Gateway request id", max_length=100, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    # The body as text: decoded with the charset the request declared (UTF-8 by default), NUL and lone
    # surrogates replaced. ``raw_bytes`` holds the exact bytes received where that text does not give them
    # back as UTF-8 (another charset, invalid UTF-8, a NUL); it is null otherwise. See ``body_bytes``.
    raw_body = models.TextField()
    raw_bytes = models.BinaryField(null=True, blank=True, editable=False)
    charset = models.CharField(
        "declared charset", max_length=40, blank=True, help_text="as the request's Content-Type declared it"
    )

    event_type = models.CharField(max_length=32, blank=True)
    idempotency_key = models.CharField(max_length=255, blank=True, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, db_index=True)
    error = models.TextField(blank=True)
    # What was cleaned in the payload's descriptive fields to store it (a NUL replaced, a text cut to its
    # column, a number taken as text): ``[{"field": "name", "warning": "NUL replaced with U+FFFD"}]``. The
    # stored body keeps what was sent.
    warnings = models.JSONField(default=list, blank=True)
    # What this delivery recorded that cannot be right (an over-refund, a second completion with another
    # total): ``[{"kind": "over_refund", "detail": "..."}]``, also on its payment's ``anomalies``.
    anomalies = models.JSONField(default=list, blank=True)
    # When the retention purge (athm_core.retention) emptied raw_body and error; the rest stays for audits.
    purged_at = models.DateTimeField(null=True, blank=True)
    # A pending delivery (outcome ``pending``): when the relay asks ATH Móvil again (null once settled), how
    # many times it has asked, and the delivery that settled it (applied, duplicate, rejected, ...).
    verify_after = models.DateTimeField(null=True, blank=True, db_index=True)
    verification_attempts = models.PositiveIntegerField(default=0)
    # When ATH Móvil first answered about this pending delivery without confirming it (its transaction report
    # does not list it, findPayment still says OPEN): such a delivery is never applied unverified by the
    # ATHM_APPLY_UNVERIFIED_AFTER deadline, and is kept ``unverified`` two days on.
    not_confirmed_at = models.DateTimeField(null=True, blank=True)
    settled_by = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="settled", editable=False
    )

    payment = models.ForeignKey(
        Payment, on_delete=models.SET_NULL, null=True, blank=True, related_name="webhook_events"
    )
    refund = models.ForeignKey(
        Refund, on_delete=models.SET_NULL, null=True, blank=True, related_name="webhook_events"
    )

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            # The purge's "not yet purged, received before the cutoff": without it, every run would walk
            # all the rows purged by the runs before.
            models.Index(fields=["purged_at", "received_at"], name="athm_event_purge_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type or 'unreadable event'} ({self.outcome}) #{self.pk}"

    @property
    def body_bytes(self) -> bytes:
        """The body exactly as received (``b""`` once purged): ``raw_bytes`` where kept, else the UTF-8 of
        ``raw_body``."""
        if self.raw_bytes is not None:
            return bytes(self.raw_bytes)
        return self.raw_body.encode("utf-8")

    @property
    def receiver_errors(self) -> list[dict]:
        """The receivers that last failed on this event's notices, read from its :class:`Notice` rows.

        Each entry is ``{"signal", "receiver", "error" (the traceback), "payment_id", "refund_id",
        "attempts", "last_attempt_at"}``; ``[]`` when every receiver has handled them. A query per call.
        """
        return [failure for notice in self.notices.order_by("id") for failure in notice.failures()]


class OutboxMessage(models.Model):
    """A business event for consumers outside the process, written in the transaction that made the change.

    ``body`` is the message exactly as it is published (see :mod:`athm_core.outbox`); publishing it again
    after a failure sends the same bytes with the same ``event_id``.
    """

    event_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    event_type = models.CharField(max_length=32)
    transaction_type = models.CharField(max_length=16)
    schema_version = models.PositiveSmallIntegerField()
    # One payment's messages share a group and are published in the order they were written.
    group_key = models.CharField(max_length=64)
    body = models.TextField()
    webhook_event = models.ForeignKey(
        WebhookEvent, on_delete=models.SET_NULL, null=True, blank=True, related_name="outbox_messages"
    )

    created_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    published_message_id = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Pending rows in id order straight from the index: MariaDB then locks only the rows it hands
            # out, where a sort would lock every pending row first and leave other relays nothing to take.
            models.Index(fields=["published_at", "id"], name="athm_outbox_pending_idx"),
            models.Index(fields=["group_key", "published_at"], name="athm_outbox_group_idx"),
        ]

    def __str__(self) -> str:
        state = "published" if self.published_at else "pending"
        return f"{self.event_type} {self.event_id} ({state})"


class Notice(models.Model):
    """One signal that a committed state change sends, and what became of it at each receiver.

    Written in the transaction that makes the change (:mod:`athm_core.processor`), so a committed change
    always has its notices; delivered after the commit (:mod:`athm_core.dispatch`), by the delivery that made
    the change, a redelivery of the same event, or the relay. ``receivers`` lists the receivers connected
    when the notice was written, in the order the signal calls them, each with its state::

        [{"receiver": "shop.receivers.mark_paid", "state": "delivered", "attempts": 1,
          "last_attempt_at": "2026-11-30T08:00:00.123456-04:00"},
         {"receiver": "shop.receivers.email", "state": "failed", "attempts": 2, "last_attempt_at": ...,
          "error": "Traceback (most recent call last): ..."}]

    ``state`` is ``pending`` (not yet called), ``delivered`` (returned; never called again for this notice),
    ``failed`` (raised, or was not connected; called again later) or ``forgotten`` (given up by hand: a
    receiver removed on purpose). ``delivered_at`` is set once every
    receiver has it. ``notice_id`` is the notice's identifier, given to each receiver as ``notice_id`` and
    used as the ``id`` of the SNS message for the same change.
    """

    class ReceiverState(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"
        # Given up by hand (``athm redispatch --forget``): a receiver removed or renamed on purpose.
        FORGOTTEN = "forgotten", "Forgotten"

    notice_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    # The signal's name in athm_core.signals, e.g. "payment_completed".
    signal = models.CharField(max_length=32)
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="notices")
    refund = models.ForeignKey(
        Refund, on_delete=models.PROTECT, null=True, blank=True, related_name="notices"
    )
    webhook_event = models.ForeignKey(
        WebhookEvent, on_delete=models.SET_NULL, null=True, blank=True, related_name="notices"
    )
    receivers = models.JSONField(default=list, blank=True)

    created_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField()
    # Delivery runs that ended with a receiver still failing.
    attempts = models.PositiveIntegerField(default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Pending notices in id order straight from the index, as for the outbox.
            models.Index(fields=["delivered_at", "id"], name="athm_notice_pending_idx"),
        ]

    def __str__(self) -> str:
        state = "delivered" if self.delivered_at else "pending"
        return f"{self.signal} of payment {self.payment_id} ({state})"

    def failures(self) -> list[dict]:
        """This notice's failed receivers, in the shape of :attr:`WebhookEvent.receiver_errors`."""
        rows = {"payment_id": self.payment_id}
        if self.refund_id is not None:
            rows["refund_id"] = self.refund_id
        return [
            {
                "signal": self.signal,
                "receiver": entry.get("receiver", ""),
                "error": entry.get("error", ""),
                **rows,
                "attempts": entry.get("attempts", 0),
                "last_attempt_at": entry.get("last_attempt_at"),
            }
            for entry in self.receivers or []
            if isinstance(entry, dict) and entry.get("state") == self.ReceiverState.FAILED
        ]
