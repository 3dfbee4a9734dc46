"""The same event posted at once by several Lambda containers (processes): one row change, one signal.

Runs on every database the suite runs on: SQLite (writers queue), PostgreSQL and MariaDB (row locks and
unique constraints decide).
"""

import json
from collections import Counter
from decimal import Decimal

from athm_core.models import Payment, Refund, WebhookEvent
from tests.conftest import sample_data

PROCESSES = 4
ROUNDS = 6


def bodies_for_round(index: int) -> list[tuple[str, str | None]]:
    """Events of one checkout story, each paired with the signal its first delivery fires."""
    reference = f"215070{index:03d}-race{index:026d}"
    completed = {
        **sample_data("ecommerce_completed.production"),
        "ecommerceId": f"race-checkout-{index}",
        "referenceNumber": reference,
    }
    refund = {**sample_data("refund_sent.production"), "referenceNumber": reference, "total": "6.00"}
    app_payment = {**sample_data("payment_received"), "referenceNumber": f"app-{reference}"}
    cancelled = {**sample_data("ecommerce_cancelled.production"), "ecommerceId": f"race-cancel-{index}"}
    # Odd rounds send the refund before its payment, so the refund waits and is linked under the race.
    story = (
        [(refund, None), (completed, "payment_completed")]
        if index % 2
        else [
            (completed, "payment_completed"),
            (refund, "refund_sent"),
        ]
    )
    story += [(app_payment, "payment_received"), (cancelled, "payment_cancelled")]
    return [(json.dumps(data), signal) for data, signal in story]


def test_the_same_event_at_once_from_several_processes(start_child):
    children = [start_child() for _ in range(PROCESSES)]
    for child in children:
        child.wait_ready()

    signals_fired: Counter[str] = Counter()
    for index in range(ROUNDS):
        for body, first_signal in bodies_for_round(index):
            for child in children:  # every process gets the delivery before any answers
                child.send(body)
            results = [child.receive() for child in children]
            assert [r["status"] for r in results] == [200] * PROCESSES, results
            outcomes = Counter(r["answer"]["outcome"] for r in results)
            assert outcomes == {"applied": 1, "duplicate": PROCESSES - 1}, results
            fired = Counter()
            for result in results:
                fired.update(result["signals"])
            if first_signal == "payment_completed" and index % 2:
                # The waiting refund is linked by whichever delivery completed the payment.
                assert fired == {"payment_completed": 1, "refund_sent": 1}, results
            else:
                assert fired == (Counter({first_signal: 1}) if first_signal else Counter()), results
            signals_fired.update(fired)

    assert signals_fired == {
        "payment_completed": ROUNDS,
        "refund_sent": ROUNDS,
        "payment_received": ROUNDS,
        "payment_cancelled": ROUNDS,
    }
    assert Payment.objects.filter(status=Payment.Status.COMPLETED).count() == 2 * ROUNDS
    assert Payment.objects.filter(status=Payment.Status.CANCELLED).count() == ROUNDS
    assert Refund.objects.count() == ROUNDS
    assert not Refund.objects.filter(payment__isnull=True).exists()
    for payment in Payment.objects.filter(
        transaction_type=Payment.TransactionType.ECOMMERCE, status="completed"
    ):
        assert payment.total_refunded_amount == Decimal("6.00")
    assert WebhookEvent.objects.count() == ROUNDS * 4 * PROCESSES
    for child in children:
        assert child.close() == 0, child.log()
