"""Receivers written the way django-athm 1.x documents them (its docs/signals.md and docs/models.md) run
here with only their imports changed: the same signal names, senders and keyword arguments, and the
``Payment`` and ``Refund`` attributes they read (``customer_name``, ``is_successful``, ``is_refundable``,
``refundable_amount``, ``Payment.Status.COMPLETED`` and ``CANCEL``).
See docs/migrating-from-django-athm.md."""

import json
from decimal import Decimal

import pytest
from django.dispatch import receiver

from athm_core import processor
from athm_core.models import Payment, Refund
from athm_core.payloads import parse_data
from athm_core.signals import payment_cancelled, payment_completed, payment_expired, refund_sent
from tests.conftest import sample_data

pytestmark = pytest.mark.django_db(transaction=True)


def deliver(name: str, **changes) -> None:
    data = {**sample_data(name), **changes}
    processor.process(parse_data(data), raw_body=json.dumps(data))


@pytest.fixture
def heard():
    """django-athm's "Complete Example" receivers, as its documentation writes them, each noting what it
    read."""
    log: list[tuple] = []

    @receiver(payment_completed)
    def on_payment_completed(sender, payment, **kwargs):
        log.append(
            (
                "completed",
                sender,
                payment.reference_number,
                payment.metadata_1,
                payment.customer_name,
                payment.customer_phone,
                payment.customer_email,
                payment.is_successful,
                payment.is_refundable,
                payment.refundable_amount,
                payment.status == Payment.Status.COMPLETED,
            )
        )

    @receiver(payment_cancelled)
    def on_payment_cancelled(sender, payment, **kwargs):
        log.append(
            (
                "cancelled",
                sender,
                payment.ecommerce_id,
                payment.status == Payment.Status.CANCEL,
                payment.is_successful,
                payment.is_refundable,
                payment.refundable_amount,
            )
        )

    # Connected for one sender, as django-athm's users also write it.
    @receiver(payment_completed, sender=Payment)
    def on_payment_completed_by_sender(sender, payment, **kwargs):
        log.append(("completed by sender", payment.reference_number))

    @receiver(payment_expired)
    def on_payment_expired(sender, payment, **kwargs):
        log.append(("expired", sender, payment.ecommerce_id, payment.status == Payment.Status.EXPIRED))

    @receiver(refund_sent)
    def on_refund_sent(sender, refund, payment, **kwargs):
        log.append(
            (
                "refund",
                sender,
                refund.amount,
                payment.reference_number,
                refund.customer_name,
                refund.customer_phone,
                refund.customer_email,
                payment.is_refundable,
                payment.refundable_amount,
            )
        )

    receivers = [
        (payment_completed, on_payment_completed),
        (payment_completed, on_payment_completed_by_sender),
        (payment_cancelled, on_payment_cancelled),
        (payment_expired, on_payment_expired),
        (refund_sent, on_refund_sent),
    ]
    yield log
    for signal, function in receivers:
        signal.disconnect(function)


def test_django_athm_s_documented_receivers_run_unchanged(heard):
    reference = "215070444-402894c185ab1be40185acfe61c2000c"
    deliver("ecommerce_completed.production")
    deliver("refund_sent.production", total="6.00")
    deliver("ecommerce_cancelled.documented", ecommerceId="checkout-cancelled")
    deliver("ecommerce_expired", ecommerceId="checkout-expired")

    assert heard == [
        (
            "completed",
            Payment,
            reference,
            "order-1002",
            "Luis Ortiz",
            "7875550102",
            "luis@example.com",
            True,
            True,
            Decimal("26.00"),
            True,
        ),
        ("completed by sender", reference),
        # The refund: the customer's fields as django-athm names them; 20.00 of 26.00 left to refund.
        (
            "refund",
            Refund,
            Decimal("6.00"),
            reference,
            "Luis Ortiz",
            "7875550102",
            "luis@example.com",
            True,
            Decimal("20.00"),
        ),
        ("cancelled", Payment, "checkout-cancelled", True, False, False, Decimal("0.00")),
        ("expired", Payment, "checkout-expired", True),
    ]


def test_a_fully_refunded_payment_is_no_longer_refundable(heard):
    deliver("ecommerce_completed.production")
    deliver("refund_sent.production")  # the whole 26.00
    payment = Payment.objects.get()
    assert (payment.is_successful, payment.is_refundable, payment.refundable_amount) == (
        True,
        False,
        Decimal("0.00"),
    )


def test_the_aliases_are_read_only_and_match_the_fields(heard):
    deliver("ecommerce_completed.production")
    payment = Payment.objects.get()
    assert (payment.customer_name, payment.customer_phone, payment.customer_email) == (
        payment.name,
        payment.phone_number,
        payment.email,
    )
    with pytest.raises(AttributeError):
        payment.customer_name = "someone else"
    # Payment.Status.CANCEL is django-athm's name for the same stored value, not a new one.
    assert Payment.Status.CANCEL is Payment.Status.CANCELLED
    assert [value for value, _ in Payment.Status.choices] == ["open", "completed", "cancelled", "expired"]
