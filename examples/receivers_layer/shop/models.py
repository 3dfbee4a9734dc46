"""The shop's own rows: orders, and the payment confirmation sent for each.

An order's ``reference`` is what the checkout sent to ATH Móvil as ``metadata1``; it comes back on every
payment as ``payment.metadata_1``, which is how the receivers find the order. Money is ``Decimal``, exact
to the cent. Customer details (name, phone, email) are not copied here: they stay on ATH Móvil's
``Payment`` row, which ``payment_reference_number`` leads to.
"""

from decimal import Decimal

from django.db import models


def _money(verbose_name: str, **options) -> models.DecimalField:
    return models.DecimalField(verbose_name, max_digits=12, decimal_places=2, **options)


class Order(models.Model):
    """An order the customer pays with ATH Móvil."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        PAID = "paid", "Paid"
        PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"
        REFUNDED = "refunded", "Refunded"

    reference = models.CharField(max_length=255, unique=True, help_text="Sent to ATH Móvil as metadata1.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    total = _money("total asked", null=True, blank=True, help_text="Empty for an order made from a payment.")
    amount_paid = _money("amount paid", default=Decimal("0.00"))
    amount_refunded = _money("amount refunded", default=Decimal("0.00"))

    # The ATH Móvil payment that paid the order: its refunds carry this reference number.
    payment_reference_number = models.CharField("ATH reference number", max_length=100, blank=True)
    ecommerce_id = models.CharField("ATH eCommerce id", max_length=100, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    # The checkout never created this order: a payment for an unknown reference did. Worth a look.
    created_from_payment = models.BooleanField(default=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"order {self.reference} ({self.status})"


class Confirmation(models.Model):
    """The payment confirmation sent to the customer: at most one per order."""

    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="confirmation")
    payment_reference_number = models.CharField("ATH reference number", max_length=100)
    amount = _money("amount")
    sent_at = models.DateTimeField()

    class Meta:
        ordering = ["-sent_at"]

    def __str__(self) -> str:
        return f"confirmation of {self.order.reference}"
