"""Publishing the outbox to SNS (moto): what subscribers receive, FIFO, and SNS failing and coming back."""

import json
import socket
from collections import Counter

from django.core.management import call_command

from athm_core.models import OutboxMessage, Payment
from handler import publisher
from tests.conftest import Topic, sample, sample_data, use_topic

FULFILMENT = {"event_type": ["payment_completed", "refund_sent", "payment_received"]}


def body(name: str, **changes) -> str:
    return json.dumps({**sample_data(name), **changes})


def replay(lambda_handler, bodies: list[str]) -> None:
    for text in bodies:
        response = lambda_handler.post(text)
        assert response.status == 200, response


def a_day_of_webhooks() -> tuple[list[str], list[tuple[str, str]]]:
    """Deliveries with redeliveries and events out of order, and the (type, key) of each state change."""
    completed = sample_data("ecommerce_completed.production")
    late = {**completed, "ecommerceId": "checkout-late", "referenceNumber": "215070999-late"}
    bodies = [
        body("ecommerce_completed.production"),
        body("ecommerce_completed.production"),  # redelivered
        body("refund_sent.production", total="6.00"),
        body("refund_sent.production", total="6.00"),  # redelivered
        # A refund that arrives before its payment, and a cancel that arrives after completion.
        body("refund_sent.production", referenceNumber="215070999-late", total="1.00"),
        json.dumps(late),
        body("ecommerce_cancelled.production", ecommerceId="checkout-late"),
        body("ecommerce_cancelled.production", ecommerceId="checkout-walked-away"),
        body("ecommerce_expired", ecommerceId="checkout-timed-out"),
        body("payment_received"),
        body("payment_received"),  # redelivered
        body("donation_received"),
        sample("simulated"),
    ]
    changes = [
        ("payment_completed", completed["ecommerceId"]),
        ("refund_sent", completed["referenceNumber"]),
        ("payment_completed", "checkout-late"),
        ("refund_sent", "215070999-late"),
        ("payment_cancelled", "checkout-walked-away"),
        ("payment_expired", "checkout-timed-out"),
        ("payment_received", sample_data("payment_received")["referenceNumber"]),
        ("donation_received", sample_data("donation_received")["referenceNumber"]),
    ]
    return bodies, changes


def key(message_body: dict) -> tuple[str, str]:
    payment = message_body["payment"]
    if message_body["type"] == "refund_sent":
        return ("refund_sent", message_body["refund"]["reference_number"])
    return (message_body["type"], payment["ecommerce_id"] or payment["reference_number"])


def test_a_filtered_subscription_receives_exactly_the_expected_messages(
    lambda_handler, make_topic, event_schema
):
    topic = make_topic(filter_policy=FULFILMENT)
    everything = Topic("athm-audit")  # a second, unfiltered subscriber of the same topic
    everything.sns.subscribe(
        TopicArn=topic.arn,
        Protocol="sqs",
        Endpoint=everything.sqs.get_queue_attributes(
            QueueUrl=everything.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"],
        Attributes={"RawMessageDelivery": "true"},
    )
    bodies, changes = a_day_of_webhooks()
    replay(lambda_handler, bodies)
    replay(lambda_handler, bodies)  # the whole day again: nothing new

    received = topic.messages()
    wanted = [change for change in changes if change[0] in FULFILMENT["event_type"]]
    assert sorted(key(m.body) for m in received) == sorted(wanted)
    all_messages = everything.messages()
    assert sorted(key(m.body) for m in all_messages) == sorted(changes)

    for message in all_messages:
        event_schema.validate(message.body)
        assert message.attributes == {
            "event_type": message.body["type"],
            "transaction_type": message.body["payment"]["transaction_type"],
            "schema_version": "1",
        }
    assert len({m.body["id"] for m in all_messages}) == len(changes)
    # Every message is marked published, with the id SNS gave it.
    rows = OutboxMessage.objects.all()
    assert rows.count() == len(changes)
    assert all(row.published_at and row.published_message_id and row.attempts == 1 for row in rows)
    assert {str(row.event_id) for row in rows} == {m.body["id"] for m in all_messages}


def test_message_text_is_published_exactly_as_stored(lambda_handler, make_topic):
    topic = make_topic()
    replay(lambda_handler, [body("payment_received")])
    [message] = topic.messages()
    assert message.text == OutboxMessage.objects.get().body


def test_fifo_topic_keeps_a_payments_order_and_drops_a_duplicate_publish(lambda_handler, make_topic):
    topic = make_topic(fifo=True)
    replay(
        lambda_handler,
        [
            body("ecommerce_completed.production"),
            body("refund_sent.production", total="1.00"),
            body("refund_sent.production", total="2.00"),
            body("payment_received"),
        ],
    )
    # A relay that dies after SNS accepted the messages but before it recorded that sends them again.
    OutboxMessage.objects.update(published_at=None)
    report = publisher.relay(retry_now=True)
    assert report.published == 4 and report.pending == 0

    received = topic.messages()
    assert len(received) == 4  # FIFO deduplicates on the event id (MessageDeduplicationId)
    payment = Payment.objects.get(transaction_type="ecommerce")
    ours = [m for m in received if m.group_id == f"payment-{payment.pk}"]
    assert [m.body["type"] for m in ours] == ["payment_completed", "refund_sent", "refund_sent"]
    assert [m.body["refund"] and m.body["refund"]["amount"] for m in ours] == [None, "1.00", "2.00"]


def missing_topic(settings) -> str:
    """A topic ARN that SNS (moto) does not know yet: every publish to it fails."""
    arn = "arn:aws:sns:us-east-1:123456789012:athm-events"
    use_topic(settings, arn)
    return arn


def test_sns_failing_leaves_the_answer_200_and_the_message_pending_until_the_relay(
    lambda_handler, aws, settings, capfd, caplog
):
    missing_topic(settings)
    response = lambda_handler.post(body("payment_received"))
    assert response.status == 200 and response.json()["outcome"] == "applied"
    row = OutboxMessage.objects.get()
    assert row.published_at is None and row.attempts == 1 and "NotFound" in row.last_error
    assert "SNS publish failed; the message stays pending" in caplog.messages
    assert '"OutboxPublishFailed":[1.0]' in capfd.readouterr().out

    # SNS is back (the topic exists): the relay waits out the backoff, or retries at once when told to.
    topic = Topic()
    assert publisher.relay().published == 0
    report = publisher.relay(retry_now=True)
    assert (report.published, report.failed, report.pending) == (1, 0, 0)
    [message] = topic.messages()
    assert message.body["id"] == str(row.event_id) and message.text == row.body
    row.refresh_from_db()
    assert row.published_at and row.attempts == 2


def test_an_unreachable_sns_endpoint_leaves_the_answer_200_until_the_relay(
    lambda_handler, aws, settings, monkeypatch
):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", f"http://127.0.0.1:{port}")
    missing_topic(settings)
    response = lambda_handler.post(body("donation_received"))
    assert response.status == 200
    row = OutboxMessage.objects.get()
    assert row.published_at is None and "EndpointConnectionError" in row.last_error

    # The endpoint is back (moto's in-process SNS) and the relay publishes the message.
    monkeypatch.delenv("AWS_ENDPOINT_URL_SNS")
    publisher.reset()
    topic = Topic()
    assert publisher.relay(retry_now=True).published == 1
    assert [m.body["id"] for m in topic.messages()] == [str(row.event_id)]


def test_a_payments_later_messages_wait_behind_an_earlier_one_that_failed(lambda_handler, aws, settings):
    missing_topic(settings)
    replay(lambda_handler, [body("ecommerce_completed.production")])
    replay(lambda_handler, [body("refund_sent.production", total="6.00")])
    completed, refunded = OutboxMessage.objects.order_by("id")
    completed.refresh_from_db()
    # The refund's own publish tried the payment's older message first, failed, and held the refund back.
    assert completed.attempts == 2 and refunded.attempts == 0 and refunded.published_at is None

    topic = Topic()
    # The refund is due, the completion waits for its retry: nothing goes out of order.
    assert publisher.relay().published == 0
    assert topic.messages() == []
    assert publisher.relay(retry_now=True).published == 2
    # SQS standard queues do not keep order; the publish times do.
    first, second = OutboxMessage.objects.order_by("id")
    assert first.published_at <= second.published_at
    assert Counter(m.body["type"] for m in topic.messages()) == {"payment_completed": 1, "refund_sent": 1}


def test_a_new_event_for_the_payment_publishes_its_waiting_messages_first(lambda_handler, aws, settings):
    missing_topic(settings)
    replay(lambda_handler, [body("ecommerce_completed.production")])
    topic = Topic()
    replay(lambda_handler, [body("refund_sent.production", total="6.00")])
    assert not OutboxMessage.objects.filter(published_at=None).exists()
    assert sorted(m.body["type"] for m in topic.messages()) == ["payment_completed", "refund_sent"]


def test_the_relay_stops_when_sns_keeps_failing(aws, settings, lambda_handler):
    missing_topic(settings)
    settings.ATHM_SNS_TOPIC_ARN = ""  # write messages without publishing them
    replay(lambda_handler, [body("payment_received", referenceNumber=f"app-{i}") for i in range(8)])
    missing_topic(settings)
    report = publisher.relay(retry_now=True)
    assert (report.published, report.failed, report.pending) == (0, 3, 8)
    assert OutboxMessage.objects.filter(attempts=1).count() == 3


def test_athm_relay_command(aws, settings, lambda_handler, capsys):
    settings.ATHM_OUTBOX = True
    replay(lambda_handler, [body("payment_received"), body("donation_received")])
    assert OutboxMessage.objects.filter(published_at=None).count() == 2
    topic = Topic()
    use_topic(settings, topic.arn)
    call_command("relay", "--batch-size", "1")
    out = capsys.readouterr().out
    assert "notices: linked 0 waiting refund(s), delivered 0, 0 receiver failure(s), pending 0" in out
    assert "outbox: published 2, failed 0, pending 0" in out
    assert len(topic.messages()) == 2


def test_athm_relay_without_a_topic_delivers_notices_and_says_there_is_nothing_to_publish(
    settings, db, capsys
):
    settings.ATHM_SNS_TOPIC_ARN = ""
    call_command("relay")
    out = capsys.readouterr().out
    assert "notices: linked 0 waiting refund(s), delivered 0, 0 receiver failure(s), pending 0" in out
    assert "outbox: nothing to publish (no message waits; ATHM_SNS_TOPIC_ARN is not set here)" in out
    assert capsys.readouterr().err == ""  # nothing waits: no warning


def test_athm_relay_from_a_shell_without_the_servers_topic_says_what_waits_and_what_to_export(
    aws, settings, lambda_handler, capsys
):
    """The README's SNS walkthrough: messages a server with a topic wrote, then `athm relay` from a shell
    that has not exported ATHM_SNS_TOPIC_ARN: the messages stay, and the shell is told what to export."""
    settings.ATHM_OUTBOX = True
    replay(lambda_handler, [body("payment_received"), body("donation_received")])
    settings.ATHM_SNS_TOPIC_ARN = ""
    call_command("relay", "--retry-now")
    said = capsys.readouterr()
    assert "notices: linked 0 waiting refund(s)" in said.out
    assert "outbox: 2 message(s) wait to be published (the oldest for 0 s)" in said.err
    assert "ATHM_SNS_TOPIC_ARN is not set in this shell" in said.err
    assert "Export the ATHM_SNS_TOPIC_ARN that the server had (and its AWS_ENDPOINT_URL" in said.err
    assert OutboxMessage.objects.filter(published_at=None).count() == 2
