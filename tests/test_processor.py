"""The state machine: rows change once, signals fire once after commit, whatever the order or repetition."""

import json
from decimal import Decimal

import pytest
from django.db import transaction

from athm_core import processor
from athm_core.models import Notice, Payment, Refund, WebhookEvent
from athm_core.payloads import parse_data
from tests.conftest import sample_data

pytestmark = pytest.mark.django_db(transaction=True)

Outcome = WebhookEvent.Outcome
COMPLETED = "ecommerce_completed.documented"
CANCELLED = "ecommerce_cancelled.documented"
EXPIRED = "ecommerce_expired"
REFUND = "refund_sent.documented"


def deliver(name: str, **changes) -> WebhookEvent:
    data = {**sample_data(name), **changes}
    return processor.process(parse_data(data), raw_body=json.dumps(data), source_ip="192.0.2.1")


def notice_id(**row) -> object:
    """The ``notice_id`` receivers get for the one notice of ``row`` (``payment=`` or ``refund=``)."""
    if "refund" in row:
        return Notice.objects.get(refund=row["refund"]).notice_id
    return Notice.objects.get(**row).notice_id


def same_checkout(name: str, ecommerce_id: str = "checkout-1", **changes) -> WebhookEvent:
    """Deliver ``name`` for one shared checkout, so that cancel/expire/complete samples meet."""
    return deliver(name, ecommerceId=ecommerce_id, **changes)


def test_completed_payment_fires_payment_completed_once(signal_log):
    record = deliver(COMPLETED)
    assert record.outcome == Outcome.APPLIED
    payment = Payment.objects.get()
    assert payment.status == Payment.Status.COMPLETED
    assert payment.transaction_type == Payment.TransactionType.ECOMMERCE
    assert payment.total == Decimal("3.00") and payment.fee == Decimal("0.06")
    assert payment.net_amount == Decimal("2.94") and payment.metadata_1 == "order-1001"
    assert payment.items == [
        {
            "name": "Café",
            "description": "Café colao",
            "quantity": 1,
            "price": "2.50",
            "tax": "0.50",
            "metadata": "sku-ca-1",
            "sku": "",
        }
    ]
    assert record.payment == payment and record.source_ip == "192.0.2.1"
    [(name, sender, arguments)] = signal_log.calls
    assert (name, sender) == ("payment_completed", Payment)
    # The seed's arguments, plus the notice's id for receivers that deduplicate.
    assert arguments == {"payment": payment, "notice_id": notice_id(payment=payment)}
    assert arguments["payment"].status == Payment.Status.COMPLETED


@pytest.mark.parametrize("times", [2, 20])
def test_redeliveries_change_nothing_and_fire_nothing(signal_log, times):
    records = [deliver(COMPLETED) for _ in range(times)]
    assert [r.outcome for r in records] == [Outcome.APPLIED] + [Outcome.DUPLICATE] * (times - 1)
    assert Payment.objects.count() == 1
    assert WebhookEvent.objects.count() == times  # every delivery is kept
    assert len({r.idempotency_key for r in records}) == 1
    assert signal_log.names() == ["payment_completed"]


@pytest.mark.parametrize(
    ("name", "status", "signal"),
    [
        (CANCELLED, Payment.Status.CANCELLED, "payment_cancelled"),
        (EXPIRED, Payment.Status.EXPIRED, "payment_expired"),
    ],
)
def test_cancel_and_expire(signal_log, name, status, signal):
    first, again = same_checkout(name), same_checkout(name)
    assert (first.outcome, again.outcome) == (Outcome.APPLIED, Outcome.DUPLICATE)
    payment = Payment.objects.get()
    assert payment.status == status and payment.reference_number is None
    assert payment.total == Decimal("3.00")
    assert signal_log.calls == [
        (signal, Payment, {"payment": payment, "notice_id": notice_id(payment=payment)})
    ]


def test_production_cancel_shape(signal_log):
    record = deliver("ecommerce_cancelled.production")
    assert record.outcome == Outcome.APPLIED
    assert Payment.objects.get().status == Payment.Status.CANCELLED
    assert signal_log.names() == ["payment_cancelled"]


@pytest.mark.parametrize("late", [CANCELLED, EXPIRED])
def test_late_cancel_or_expire_leaves_a_completed_payment_completed(signal_log, late):
    same_checkout(COMPLETED)
    record = same_checkout(late)
    assert record.outcome == Outcome.IGNORED
    assert Payment.objects.get().status == Payment.Status.COMPLETED
    assert signal_log.names() == ["payment_completed"]


@pytest.mark.parametrize(
    ("early", "signal"), [(CANCELLED, "payment_cancelled"), (EXPIRED, "payment_expired")]
)
def test_completed_after_cancel_or_expire_completes(signal_log, early, signal):
    same_checkout(early)
    record = same_checkout(COMPLETED)
    assert record.outcome == Outcome.APPLIED
    payment = Payment.objects.get()
    assert payment.status == Payment.Status.COMPLETED
    assert payment.reference_number == "215070443-402894c185ab1be40185acfe61c2000b"
    assert payment.fee == Decimal("0.06")
    assert signal_log.names() == [signal, "payment_completed"]


def test_expire_after_cancel_is_ignored(signal_log):
    same_checkout(CANCELLED)
    assert same_checkout(EXPIRED).outcome == Outcome.IGNORED
    assert Payment.objects.get().status == Payment.Status.CANCELLED
    assert signal_log.names() == ["payment_cancelled"]


def test_refund_is_tied_to_its_payment(signal_log):
    deliver(COMPLETED)
    record = deliver(REFUND)
    assert record.outcome == Outcome.APPLIED
    payment, refund = Payment.objects.get(), Refund.objects.get()
    assert refund.payment == payment and refund.amount == Decimal("1.50")
    assert refund.linked_at is not None
    assert payment.total_refunded_amount == Decimal("1.50")
    assert record.refund == refund and record.payment == payment
    assert signal_log.calls[-1] == (
        "refund_sent",
        Refund,
        {"refund": refund, "payment": payment, "notice_id": notice_id(refund=refund)},
    )
    assert signal_log.names() == ["payment_completed", "refund_sent"]


def test_partial_refunds_sharing_a_reference_number_add_up(signal_log):
    deliver(COMPLETED)
    deliver(REFUND, total="1.00", dailyTransactionID="0002", date="2026-11-21 09:15:00.0")
    deliver(REFUND, total="0.75", dailyTransactionID="0003", date="2026-11-21 10:00:00.0")
    deliver(REFUND, total=1.25, dailyTransactionID=4, date="2026-11-22 08:00:00")
    # Redeliveries of the first two, in another spelling.
    deliver(REFUND, total=1, dailyTransactionID=2, date="2026-11-21 09:15:00")
    deliver(REFUND, total="0.75", dailyTransactionID="3", date="2026-11-21 10:00:00.000")
    payment = Payment.objects.get()
    assert Refund.objects.count() == 3
    assert payment.total_refunded_amount == Decimal("3.00")
    assert payment.total_refunded_amount == sum(r.amount for r in payment.refunds.all())
    assert payment.refundable_amount == Decimal("0.00")
    assert signal_log.names() == ["payment_completed"] + ["refund_sent"] * 3


def test_refund_before_its_payment_is_kept_then_linked(signal_log):
    early = deliver(REFUND)
    assert early.outcome == Outcome.APPLIED
    refund = Refund.objects.get()
    assert refund.payment is None and refund.linked_at is None
    assert signal_log.calls == []  # nothing to tie it to yet

    deliver(COMPLETED)
    refund.refresh_from_db()
    payment = Payment.objects.get()
    assert refund.payment == payment and refund.linked_at is not None
    assert payment.total_refunded_amount == Decimal("1.50")
    assert signal_log.names() == ["payment_completed", "refund_sent"]
    assert signal_log.calls[1] == (
        "refund_sent",
        Refund,
        {"refund": refund, "payment": payment, "notice_id": notice_id(refund=refund)},
    )

    # Redeliveries of either change nothing more.
    deliver(COMPLETED)
    deliver(REFUND)
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("1.50")
    assert signal_log.names() == ["payment_completed", "refund_sent"]


def test_refund_of_an_app_payment(signal_log):
    deliver("payment_received")
    deliver(REFUND, referenceNumber=sample_data("payment_received")["referenceNumber"], total="8.00")
    payment = Payment.objects.get()
    assert payment.total_refunded_amount == Decimal("8.00")
    assert signal_log.names() == ["payment_received", "refund_sent"]


def test_unlinked_refund_redelivered_links_once_its_payment_exists(signal_log):
    """A refund whose link step never ran (say the process died after commit) is linked by its redelivery."""
    deliver(COMPLETED)
    data = sample_data(REFUND)
    event = parse_data(data)
    Refund.objects.create(
        reference_number=event.reference_number,
        amount=event.total,
        transaction_date=event.date,
        idempotency_key=event.idempotency_key,
    )
    record = deliver(REFUND)
    assert record.outcome == Outcome.DUPLICATE
    assert Refund.objects.get().payment == Payment.objects.get()
    assert Payment.objects.get().total_refunded_amount == Decimal("1.50")
    assert signal_log.names() == ["payment_completed", "refund_sent"]


@pytest.mark.parametrize(
    ("name", "transaction_type", "signal"),
    [
        ("payment_received", Payment.TransactionType.PAYMENT, "payment_received"),
        ("donation_received", Payment.TransactionType.DONATION, "donation_received"),
    ],
)
def test_app_payments_and_donations(signal_log, name, transaction_type, signal):
    first, again = deliver(name), deliver(name)
    assert (first.outcome, again.outcome) == (Outcome.APPLIED, Outcome.DUPLICATE)
    payment = Payment.objects.get()
    assert payment.transaction_type == transaction_type
    assert payment.status == Payment.Status.COMPLETED and payment.ecommerce_id is None
    assert payment.reference_number == sample_data(name)["referenceNumber"]
    assert signal_log.calls == [
        (signal, Payment, {"payment": payment, "notice_id": notice_id(payment=payment)})
    ]


def test_simulated_events_are_recorded_without_business_rows(signal_log):
    records = [deliver("simulated"), deliver("simulated")]
    assert [r.outcome for r in records] == [Outcome.SIMULATED] * 2
    assert Payment.objects.count() == Refund.objects.count() == 0
    assert WebhookEvent.objects.count() == 2
    assert signal_log.calls == []


def test_signals_wait_for_the_callers_commit(signal_log):
    with transaction.atomic():
        deliver(COMPLETED)
        assert signal_log.calls == []
    assert signal_log.names() == ["payment_completed"]


def test_a_rolled_back_caller_leaves_nothing_and_fires_nothing(signal_log):
    with pytest.raises(RuntimeError), transaction.atomic():
        deliver(COMPLETED)
        raise RuntimeError("the caller's own work failed")
    assert Payment.objects.count() == WebhookEvent.objects.count() == 0
    assert signal_log.calls == []


def test_a_failing_receiver_does_not_stop_the_others_and_is_recorded(signal_log):
    from athm_core.signals import payment_completed

    def broken_receiver(sender, payment, **kwargs):
        raise LookupError(f"no order {payment.metadata_1}")

    payment_completed.connect(broken_receiver)
    try:
        record = deliver(COMPLETED)
    finally:
        payment_completed.disconnect(broken_receiver)
    assert signal_log.names() == ["payment_completed"]  # the other receiver still ran
    assert Payment.objects.get().status == Payment.Status.COMPLETED  # the committed change stands
    [failure] = WebhookEvent.objects.get(pk=record.pk).receiver_errors
    assert failure["signal"] == "payment_completed"
    assert failure["receiver"].endswith("broken_receiver")
    assert "LookupError: no order order-1001" in failure["error"]


def test_invalid_and_failed_deliveries_are_kept():
    invalid = processor.record(
        "{nope", Outcome.INVALID, error="body: is not valid JSON", source_ip="192.0.2.9"
    )
    failed = processor.record(
        json.dumps(sample_data(COMPLETED)),
        Outcome.FAILED,
        error="Traceback ...",
        event=parse_data(sample_data(COMPLETED)),
    )
    assert WebhookEvent.objects.get(pk=invalid.pk).outcome == Outcome.INVALID
    assert WebhookEvent.objects.get(pk=failed.pk).event_type == "ecommerce.completed"
    assert Payment.objects.count() == 0


def test_an_event_naming_another_checkouts_reference_number_is_rejected(signal_log):
    deliver(COMPLETED)
    owner = Payment.objects.get()
    forged = same_checkout(COMPLETED, ecommerce_id="forged-checkout", total="999.00")
    assert forged.outcome == Outcome.REJECTED
    assert forged.error == f"referenceNumber {owner.reference_number} already belongs to payment {owner.pk}"
    assert list(Payment.objects.all()) == [owner]
    owner.refresh_from_db()
    assert owner.total == Decimal("3.00") and owner.ecommerce_id != "forged-checkout"
    assert signal_log.names() == ["payment_completed"]


class Deadlock(Exception):
    """What a driver raises for a deadlock: MySQL's error 1213 (PostgreSQL's carries ``sqlstate``)."""

    def __init__(self) -> None:
        super().__init__(1213, "Deadlock found when trying to get lock; try restarting transaction")


def deadlock_once(monkeypatch) -> list[int]:
    """The first transition of the next delivery dies as a deadlock's victim, as MariaDB makes one of two
    concurrent deliveries of a new checkout do."""
    from django.db import OperationalError

    calls: list[int] = []
    real = processor._TRANSITIONS[processor.EventType.ECOMMERCE_COMPLETED]

    def transition(event):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError(*Deadlock().args) from Deadlock()
        return real(event)

    monkeypatch.setitem(processor._TRANSITIONS, processor.EventType.ECOMMERCE_COMPLETED, transition)
    return calls


def test_a_deadlocks_victim_starts_again_and_applies_once(monkeypatch, signal_log):
    calls = deadlock_once(monkeypatch)
    record = deliver(COMPLETED)
    assert record.outcome == Outcome.APPLIED and len(calls) == 2
    assert Payment.objects.count() == 1 and WebhookEvent.objects.count() == 1
    assert signal_log.names() == ["payment_completed"]


def test_a_deadlock_inside_a_callers_transaction_is_the_callers_to_handle(monkeypatch, signal_log):
    from django.db import OperationalError

    calls = deadlock_once(monkeypatch)
    with pytest.raises(OperationalError), transaction.atomic():
        deliver(COMPLETED)
    assert len(calls) == 1 and not Payment.objects.exists() and signal_log.names() == []
