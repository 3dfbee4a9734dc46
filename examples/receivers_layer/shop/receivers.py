"""The shop's receivers for ATH Móvil's signals: orders paid, confirmations sent, refunds counted.

Imported once per container at cold start (``ATHM_RECEIVERS=shop.receivers``). Each receiver hears of each
state change at least once, and in practice once, after the handler's transaction has committed; every
receiver here is still written to be safe if it runs twice for the same payment or refund: it locks the
order, looks at what is already done and only then changes it. Cases that are not errors (no order
reference, an order paid twice, a refund for no known order) are logged and left alone instead of
raised. A receiver that does raise does not fail the webhook (the handler records it on the change's
notice and calls the receiver again later), but nothing here counts on that.

Logs carry ids and amounts only: never the customer's name, phone number or email.
"""

import logging
from decimal import Decimal

from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from athm_core.models import Payment, Refund
from athm_core.signals import payment_completed, refund_sent
from shop.models import Confirmation, Order

log = logging.getLogger(__name__)
# In the handler, these records go out like its own: JSON lines with the webhook's correlation id.


@receiver(payment_completed, dispatch_uid="shop.receivers.mark_order_paid")
def mark_order_paid(sender: type[Payment], payment: Payment, **kwargs) -> None:
    """Mark the order paid with the amount ATH Móvil collected.

    An order the checkout never created is made here, marked ``created_from_payment``: the money moved,
    so the shop's books should show it, and a person should look at why.
    """
    reference = payment.metadata_1.strip()
    if not reference:
        log.warning("payment %s completed without an order reference (metadata1): no order paid", payment.pk)
        return
    with transaction.atomic():
        order, created = Order.objects.select_for_update().get_or_create(
            reference=reference, defaults={"created_from_payment": True}
        )
        if order.status != Order.Status.OPEN:
            if order.payment_reference_number != payment.reference_number:
                log.warning(
                    "order %s is already %s by ATH reference %s; payment %s (ATH reference %s, %s) paid it "
                    "again and may need a refund",
                    order.reference,
                    order.status,
                    order.payment_reference_number,
                    payment.pk,
                    payment.reference_number,
                    payment.total,
                )
            return
        order.status = Order.Status.PAID
        order.amount_paid = payment.total
        order.payment_reference_number = payment.reference_number or ""
        order.ecommerce_id = payment.ecommerce_id or ""
        order.paid_at = payment.transaction_date or timezone.now()
        order.save()
    if created:
        log.warning("payment %s paid order %s, which the checkout never created", payment.pk, reference)
    if order.total is not None and order.total != order.amount_paid:
        log.warning("order %s asked for %s and was paid %s", order.reference, order.total, order.amount_paid)
    log.info(
        "order %s paid: %s by payment %s (ATH reference %s)",
        order.reference,
        order.amount_paid,
        payment.pk,
        payment.reference_number,
    )


@receiver(payment_completed, dispatch_uid="shop.receivers.confirm_order")
def confirm_order(sender: type[Payment], payment: Payment, **kwargs) -> None:
    """Send the customer one confirmation for the order this payment paid, and record it.

    Runs after ``mark_order_paid`` (receivers run in the order they were connected). The confirmation is
    recorded and sent in one transaction, under the order's lock: a second run finds the record and sends
    nothing, and a send that raises leaves no record, so the confirmation can be sent later.
    """
    reference = payment.metadata_1.strip()
    if not reference:
        return
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(reference=reference).first()
        if order is None or order.status == Order.Status.OPEN:
            return  # mark_order_paid did not pay it (it raised): nothing to confirm
        if order.payment_reference_number != payment.reference_number:
            return  # another payment paid this order and has its confirmation
        if Confirmation.objects.filter(order=order).exists():
            return
        confirmation = Confirmation.objects.create(
            order=order,
            payment_reference_number=payment.reference_number or "",
            amount=payment.total,
            sent_at=timezone.now(),
        )
        send_confirmation(confirmation, payment)


def send_confirmation(confirmation: Confirmation, payment: Payment) -> None:
    """Tell the customer their payment arrived. Replace the body with your mailer.

    A Lambda function has no mail server: send through Amazon SES (boto3's ``ses`` client, with
    ``ses:SendEmail`` on the function's role) or a provider's API. The address is ``payment.email`` and
    the name ``payment.name``; use them in the message, never in a log line. This example only logs that
    the confirmation was recorded.
    """
    log.info(
        "confirmation %s recorded for order %s: %s paid with ATH reference %s",
        confirmation.pk,
        confirmation.order.reference,
        confirmation.amount,
        confirmation.payment_reference_number,
    )


@receiver(refund_sent, dispatch_uid="shop.receivers.record_refund")
def record_refund(sender: type[Refund], refund: Refund, payment: Payment, **kwargs) -> None:
    """Count the refund against the order: partially refunded, or refunded once it covers what was paid.

    ATH Móvil's ``Payment.total_refunded_amount`` is kept as the exact sum of the payment's refunds; the
    order takes that sum, read afresh under the order's lock, instead of adding this refund's amount. So
    running twice for one refund, or two refunds at once on two containers, ends with the same exact sum.
    """
    reference = payment.metadata_1.strip()
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(reference=reference).first() if reference else None
        if order is None:
            log.warning(
                "refund %s of %s on payment %s (ATH reference %s) matches no order: nothing updated",
                refund.pk,
                refund.amount,
                payment.pk,
                refund.reference_number,
            )
            return
        if order.payment_reference_number and order.payment_reference_number != payment.reference_number:
            log.warning(
                "refund %s of %s on payment %s (ATH reference %s) is not of the payment that paid order %s: "
                "order unchanged",
                refund.pk,
                refund.amount,
                payment.pk,
                refund.reference_number,
                order.reference,
            )
            return
        refunded: Decimal = Payment.objects.values_list("total_refunded_amount", flat=True).get(pk=payment.pk)
        order.amount_refunded = max(order.amount_refunded, refunded)
        paid = order.amount_paid or payment.total
        if order.amount_refunded >= paid:
            order.status = Order.Status.REFUNDED
        elif order.amount_refunded > 0:
            order.status = Order.Status.PARTIALLY_REFUNDED
        order.save(update_fields=["amount_refunded", "status", "updated_at"])
    log.info(
        "refund %s of %s on payment %s (ATH reference %s) for order %s: %s of %s refunded, order %s",
        refund.pk,
        refund.amount,
        payment.pk,
        refund.reference_number,
        order.reference,
        order.amount_refunded,
        paid,
        order.status,
    )
