"""Several Lambda containers (processes) at once: the same event posted to each gives one row change, one
call of each receiver and one SNS message; relays running beside them (taking notices over) and beside
each other never call a receiver or publish a message twice.

Runs on every database the suite runs on: SQLite (writers queue), PostgreSQL and MariaDB (row locks,
``SKIP LOCKED`` and unique constraints decide). SNS is moto's server on 127.0.0.1.
"""

import json
import uuid
from collections import Counter, defaultdict
from decimal import Decimal

from django.db import connection

from athm_core import processor
from athm_core.models import Notice, OutboxMessage, Payment, Refund, WebhookEvent
from athm_core.payloads import parse_data
from tests.conftest import Topic, sample_data

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
    # ATH's published shape: a cancelled checkout with no identifier at all, known by what it says.
    legacy_cancelled = {**sample_data("ecommerce_cancelled.legacy"), "metadata1": f"order-race-{index}"}
    story += [
        (app_payment, "payment_received"),
        (cancelled, "payment_cancelled"),
        (legacy_cancelled, "payment_cancelled"),
    ]
    return [(json.dumps(data), signal) for data, signal in story]


def new_topic(moto_server: dict[str, str]) -> Topic:
    return Topic(f"athm-{uuid.uuid4().hex[:12]}", endpoint_url=moto_server["AWS_ENDPOINT_URL"])


def test_the_same_event_at_once_from_several_processes(start_child, moto_server):
    topic = new_topic(moto_server)
    children = [start_child(ATHM_SNS_TOPIC_ARN=topic.arn, **moto_server) for _ in range(PROCESSES)]
    relay = start_child(ATHM_SNS_TOPIC_ARN=topic.arn, **moto_server)
    for child in [*children, relay]:
        child.wait_ready()

    signals_fired: Counter[str] = Counter()
    for index in range(ROUNDS):
        for body, first_signal in bodies_for_round(index):
            for child in children:  # every process gets the delivery before any answers
                child.send(body)
            relay.send_relay(retry_now=True)  # and a relay looks for pending messages meanwhile
            results = [child.receive() for child in children]
            relayed = relay.receive()
            assert [r["status"] for r in results] == [200] * PROCESSES, results
            outcomes = Counter(r["answer"]["outcome"] for r in results)
            assert outcomes == {"applied": 1, "duplicate": PROCESSES - 1}, results
            fired = Counter(relayed["signals"])  # the relay may take a notice over: once, whoever calls it
            for result in results:
                fired.update(result["signals"])
            if first_signal == "payment_completed" and index % 2:
                # The waiting refund is linked by whichever delivery completed the payment.
                assert fired == {"payment_completed": 1, "refund_sent": 1}, results
            else:
                assert fired == (Counter({first_signal: 1}) if first_signal else Counter()), results
            signals_fired.update(fired)

    # Every notice delivered, each receiver once per state change.
    assert not Notice.objects.filter(delivered_at=None).exists()
    assert Notice.objects.count() == sum(signals_fired.values())
    assert signals_fired == {
        "payment_completed": ROUNDS,
        "refund_sent": ROUNDS,
        "payment_received": ROUNDS,
        "payment_cancelled": 2 * ROUNDS,
    }
    assert Payment.objects.filter(status=Payment.Status.COMPLETED).count() == 2 * ROUNDS
    assert Payment.objects.filter(status=Payment.Status.CANCELLED).count() == 2 * ROUNDS
    assert Refund.objects.count() == ROUNDS
    assert not Refund.objects.filter(payment__isnull=True).exists()
    for payment in Payment.objects.filter(
        transaction_type=Payment.TransactionType.ECOMMERCE, status="completed"
    ):
        assert payment.total_refunded_amount == Decimal("6.00")
    # Five deliveries a round, each to every process.
    assert WebhookEvent.objects.count() == ROUNDS * 5 * PROCESSES

    # One SNS message per state change, whoever published it.
    messages = topic.messages()
    assert Counter(m.body["type"] for m in messages) == signals_fired
    assert len({m.body["id"] for m in messages}) == len(messages)
    assert not OutboxMessage.objects.filter(published_at=None).exists()
    for child in [*children, relay]:
        assert child.close() == 0, child.log()


def write_pending_messages(settings) -> int:
    """Outbox messages for many payments, some with several messages each; none published yet."""
    settings.ATHM_OUTBOX = True
    settings.ATHM_SNS_TOPIC_ARN = ""
    app_payment = sample_data("payment_received")
    completed = sample_data("ecommerce_completed.production")
    refund = sample_data("refund_sent.production")
    events = [{**app_payment, "referenceNumber": f"app-{n}"} for n in range(120)]
    for n in range(10):
        reference = f"215070{n:03d}-relay"
        events.append({**completed, "ecommerceId": f"relay-{n}", "referenceNumber": reference})
        events += [{**refund, "referenceNumber": reference, "total": f"{k}.00"} for k in (1, 2, 3)]
    for data in events:
        processor.process(parse_data(data), raw_body=json.dumps(data))
    return OutboxMessage.objects.filter(published_at=None).count()


def test_relays_at_once_publish_every_message_once_and_in_order(start_child, moto_server, settings):
    total = write_pending_messages(settings)
    assert total == 160
    topic = new_topic(moto_server)
    relays = [start_child(ATHM_SNS_TOPIC_ARN=topic.arn, **moto_server) for _ in range(3)]
    for relay in relays:
        relay.wait_ready()
    for relay in relays:
        relay.send_relay(batch_size=4)
    reports = [relay.receive() for relay in relays]

    messages = topic.messages()
    assert len(messages) == total
    assert len({m.body["id"] for m in messages}) == total
    reports = [report["outbox"] for report in reports]
    assert sum(report["published"] for report in reports) == total, reports
    assert all(report["failed"] == 0 for report in reports), reports
    if connection.vendor != "sqlite":
        # SKIP LOCKED let the relays work side by side (SQLite runs one writer at a time).
        assert sum(1 for report in reports if report["published"]) >= 2, reports

    # Within a payment, each message was published only after the one before it.
    published: dict[str, list] = defaultdict(list)
    for row in OutboxMessage.objects.order_by("id"):
        assert row.published_at is not None and row.attempts == 1
        published[row.group_key].append(row.published_at)
    several = [times for times in published.values() if len(times) > 1]
    assert len(several) == 10
    for times in several:
        assert times == sorted(times)
    for relay in relays:
        assert relay.close() == 0, relay.log()
