"""The outbox, without SNS: one message per committed state change, written in the change's transaction.

No topic is configured here, so nothing publishes and every message stays pending for the tests to read.
"""

import json
import uuid

import pytest
from django.db import connection, transaction
from django.utils import timezone

from athm_core import outbox, processor
from athm_core.models import OutboxMessage, Payment, Refund, WebhookEvent
from athm_core.payloads import parse_data
from tests.conftest import SIGNAL_NAMES, sample_data

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def outbox_on(settings):
    settings.ATHM_OUTBOX = True
    settings.ATHM_SNS_TOPIC_ARN = ""


def deliver(name: str, **changes) -> WebhookEvent:
    data = {**sample_data(name), **changes}
    return processor.process(parse_data(data), raw_body=json.dumps(data))


def messages() -> list[tuple[str, dict]]:
    return [(m.event_type, json.loads(m.body)) for m in OutboxMessage.objects.order_by("id")]


def test_each_state_change_writes_one_message_matching_the_schema(event_schema):
    deliver("ecommerce_completed.production")
    deliver("ecommerce_cancelled.production", ecommerceId="checkout-cancelled")
    deliver("ecommerce_expired", ecommerceId="checkout-expired")
    deliver("refund_sent.production")
    deliver("payment_received")
    deliver("donation_received")

    # One per signal, named like it.
    assert [event_type for event_type, _ in messages()] == SIGNAL_NAMES
    for row in OutboxMessage.objects.all():
        body = json.loads(row.body)
        event_schema.validate(body)
        assert body["id"] == str(row.event_id) and body["type"] == row.event_type
        assert body["payment"]["transaction_type"] == row.transaction_type
        assert row.group_key == f"payment-{body['payment']['id']}"
        assert row.webhook_event.payment_id == body["payment"]["id"]
        assert row.published_at is None and row.attempts == 0
    assert len({row.event_id for row in OutboxMessage.objects.all()}) == 6


def test_the_message_carries_the_payment_to_the_cent():
    deliver("ecommerce_completed.production", fee=0.6000000238418579, netAmount="25.40")
    [(_, body)] = messages()
    payment = Payment.objects.get()
    assert body["payment"] == {
        "id": payment.pk,
        "transaction_type": "ecommerce",
        "status": "completed",
        "ecommerce_id": payment.ecommerce_id,
        "reference_number": payment.reference_number,
        "daily_transaction_id": payment.daily_transaction_id,
        "total": "26.00",
        "subtotal": "24.00",
        "tax": "2.00",
        "fee": "0.60",
        "net_amount": "25.40",
        "total_refunded_amount": "0.00",
        "metadata_1": "order-1002",
        "metadata_2": "tienda-sj",
        "business_name": "Tienda San Juan",
        "transaction_date": "2026-11-20T14:07:37-04:00",
        "items": payment.items,
        "items_complete": True,
        "anomalies": [],
    }
    assert body["occurred_at"] == "2026-11-20T14:07:37-04:00"
    assert body["refund"] is None
    assert "customer" not in body and payment.name not in json.dumps(body)


def test_a_refund_message_shows_the_refund_and_the_payment_after_it():
    deliver("ecommerce_completed.production")
    deliver("refund_sent.production", total="6.00")
    (_, completed), (_, refunded) = messages()
    refund = Refund.objects.get()
    assert refunded["refund"] == {
        "id": refund.pk,
        "reference_number": refund.reference_number,
        "daily_transaction_id": refund.daily_transaction_id,
        "amount": "6.00",
        "transaction_date": timezone.localtime(refund.transaction_date).isoformat(),
    }
    assert refunded["occurred_at"] == refunded["refund"]["transaction_date"]
    assert refunded["payment"]["total_refunded_amount"] == "6.00"
    assert completed["payment"]["total_refunded_amount"] == "0.00"


def test_customer_data_only_when_the_deployer_turns_it_on(settings, event_schema):
    deliver("payment_received")
    settings.ATHM_OUTBOX_CUSTOMER_DATA = True
    deliver("donation_received")
    (_, without), (_, with_customer) = messages()
    donation = Payment.objects.get(transaction_type="donation")
    assert "customer" not in without
    assert with_customer["customer"] == {
        "name": donation.name,
        "phone_number": donation.phone_number,
        "email": donation.email,
        "message": donation.message,
    }
    event_schema.validate(with_customer)


def test_redeliveries_late_events_and_simulated_events_write_nothing():
    for _ in range(3):
        deliver("ecommerce_completed.production")
        deliver("refund_sent.production")
        deliver("payment_received")
        deliver("simulated")
    # Arrives after completion: ignored.
    checkout = Payment.objects.get(transaction_type="ecommerce").ecommerce_id
    deliver("ecommerce_cancelled.production", ecommerceId=checkout)
    assert [event_type for event_type, _ in messages()] == [
        "payment_completed",
        "refund_sent",
        "payment_received",
    ]
    assert WebhookEvent.objects.count() == 13


def test_a_refund_waiting_for_its_payment_gets_its_message_when_linked(event_schema):
    deliver("refund_sent.production", total="6.00")
    assert not OutboxMessage.objects.exists()  # no payment to tell anyone about yet
    deliver("ecommerce_completed.production")
    (first, completed), (second, refunded) = messages()
    assert (first, second) == ("payment_completed", "refund_sent")
    assert completed["payment"]["id"] == refunded["payment"]["id"]
    assert refunded["payment"]["total_refunded_amount"] == "6.00"
    event_schema.validate(refunded)
    assert len({row.group_key for row in OutboxMessage.objects.all()}) == 1


def test_a_rolled_back_transaction_leaves_no_message():
    with pytest.raises(RuntimeError), transaction.atomic():
        deliver("ecommerce_completed.production")
        assert OutboxMessage.objects.count() == 1
        raise RuntimeError("the caller's transaction fails after the change")
    assert not OutboxMessage.objects.exists()
    assert not Payment.objects.exists()


def test_a_failure_after_the_message_was_written_leaves_no_message(monkeypatch):
    def failing_add(messages):
        OutboxMessage.objects.bulk_create(messages)
        raise RuntimeError("the database fails right after the outbox insert")

    monkeypatch.setattr(outbox, "add", failing_add)
    with pytest.raises(RuntimeError):
        deliver("ecommerce_completed.production")
    assert not OutboxMessage.objects.exists()
    assert not Payment.objects.exists() and not WebhookEvent.objects.exists()


def test_without_a_topic_the_outbox_is_off(settings):
    settings.ATHM_OUTBOX = False
    deliver("ecommerce_completed.production")
    assert Payment.objects.exists() and not OutboxMessage.objects.exists()


def test_a_message_that_would_not_fit_in_sns_leaves_its_items_out(event_schema):
    item = {"name": "n" * 255, "description": "d" * 1000, "quantity": 1, "price": "0.01"}
    data = {**sample_data("ecommerce_completed.production"), "items": [item] * 200}
    processor.process(parse_data(data), raw_body=json.dumps(data))
    row = OutboxMessage.objects.get()
    body = json.loads(row.body)
    assert len(row.body.encode()) <= outbox.MAX_BODY_BYTES < 256 * 1024
    assert body["payment"]["items"] == [] and body["payment"]["items_complete"] is False
    assert len(Payment.objects.get().items) == 200  # kept in full on the payment
    event_schema.validate(body)


def test_ids_are_uuids_and_bodies_do_not_change_once_written():
    deliver("payment_received")
    row = OutboxMessage.objects.get()
    body = row.body
    assert uuid.UUID(json.loads(body)["id"]) == row.event_id
    deliver("payment_received")
    assert OutboxMessage.objects.get().body == body


_BOOKKEEPING = ("BEGIN", "SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")


def count_statements_in_the_transaction(name: str, monkeypatch) -> int:
    """Statements a delivery runs inside its transaction (BEGIN and COMMIT not counted)."""
    statements: list[str] = []
    committed = []
    after_commit = processor._after_commit

    def record(execute, sql, params, many, context):
        if connection.in_atomic_block and not committed and not sql.upper().startswith(_BOOKKEEPING):
            statements.append(sql)
        return execute(sql, params, many, context)

    def mark_committed(*args):
        committed.append(True)
        return after_commit(*args)

    monkeypatch.setattr(processor, "_after_commit", mark_committed)
    with connection.execute_wrapper(record):
        deliver(name)
    return len(statements)


def test_statements_per_delivery_with_the_outbox(monkeypatch):
    # New: lock the payment row, insert the payment, the webhook event, its notice and its outbox message
    # (the budget: 6).
    assert count_statements_in_the_transaction("ecommerce_completed.production", monkeypatch) == 5
    # Redelivery: lock the payment row, insert the webhook event; no message.
    assert count_statements_in_the_transaction("ecommerce_completed.production", monkeypatch) == 2


def test_claim_hands_out_a_groups_messages_only_in_order():
    deliver("ecommerce_completed.production")
    deliver("refund_sent.production", total="1.00")
    deliver("refund_sent.production", total="2.00")
    deliver("payment_received")
    first, second, third, other = OutboxMessage.objects.order_by("id")
    with outbox.claim(limit=10) as claimed:
        assert claimed == [first, second, third, other]
    # The oldest of the payment's messages is not handed out (held elsewhere, or waiting for a retry):
    # the payment's later messages wait too; other payments' do not.
    with outbox.claim(limit=10, due_by=first.created_at) as claimed:
        assert claimed == [first]
    OutboxMessage.objects.filter(pk=first.pk).update(next_attempt_at=other.created_at.replace(year=2100))
    with outbox.claim(limit=10, due_by=other.next_attempt_at) as claimed:
        assert claimed == [other]
    outbox.mark_published(first)
    with outbox.claim(limit=10, due_by=other.next_attempt_at) as claimed:
        assert claimed == [second, third, other]


def test_failures_back_off_and_never_give_up():
    deliver("payment_received")
    row = OutboxMessage.objects.get()
    waits = []
    for _ in range(12):
        outbox.mark_failed(row, "SNS is down")
        waits.append((row.next_attempt_at - timezone.now()).total_seconds())
    row.refresh_from_db()
    assert row.attempts == 12 and row.published_at is None and row.last_error == "SNS is down"
    # 5 s, 10 s, 20 s ... (give or take a fifth), then every 15 minutes.
    assert 3.9 <= waits[0] <= 6 and 7.9 <= waits[1] <= 12 and 15.9 <= waits[2] <= 24
    assert waits[-1] >= 15 * 60 * 0.8 - 1 and max(waits) <= 15 * 60 * 1.2
    assert outbox.backlog().pending == 1


def test_backlog_reports_the_oldest_pending_message():
    assert outbox.backlog() == outbox.Backlog(0, None)
    deliver("payment_received")
    deliver("donation_received")
    first = OutboxMessage.objects.order_by("id").first()
    backlog = outbox.backlog()
    assert backlog.pending == 2 and backlog.oldest_created_at == first.created_at
    outbox.mark_published(first)
    assert outbox.backlog().pending == 1
    assert outbox.backlog().oldest_age().total_seconds() >= 0
