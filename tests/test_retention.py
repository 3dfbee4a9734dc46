"""The retention purge: old webhook bodies emptied, old published outbox messages and old delivered notices
deleted, and nothing else changed: newer events, pending messages, unfinished notices, payments and
refunds."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from athm_core import processor, retention
from athm_core.models import Notice, OutboxMessage, Payment, Refund, WebhookEvent
from athm_core.payloads import parse
from athm_core.retention import purge_events
from tests.conftest import sample
from tests.test_logs import customer_data

Outcome = WebhookEvent.Outcome

pytestmark = pytest.mark.django_db

RECEIVER_TRACEBACK = (
    'Traceback (most recent call last):\n  File "shop/receivers.py", line 9, in mark_paid\n'
    "ValueError: cannot email Luis Ortiz at luis@example.com or call 7875550102\n"
)


def deliver(name: str, *, days_ago: int = 0) -> WebhookEvent:
    record = processor.process(parse(sample(name)), raw_body=sample(name))
    WebhookEvent.objects.filter(pk=record.pk).update(received_at=timezone.now() - timedelta(days=days_ago))
    return WebhookEvent.objects.get(pk=record.pk)


def table(model) -> list[dict]:
    return list(model.objects.order_by("pk").values())


@pytest.fixture
def history(settings):
    """Deliveries 40 days old and 1 day old, with their outbox messages (some published) and their notices
    (some delivered, one still waiting for a receiver that fails)."""
    settings.ATHM_OUTBOX = True
    old = [
        deliver("ecommerce_completed.production", days_ago=40),
        deliver("refund_sent.production", days_ago=40),
    ]
    invalid = processor.record(
        '{"name": "Luis Ortiz", "total": "x"}', Outcome.INVALID, error="total: not a number 'x'"
    )
    failed = processor.record(sample("payment_received"), Outcome.FAILED, error=RECEIVER_TRACEBACK)
    WebhookEvent.objects.filter(pk__in=[invalid.pk, failed.pk]).update(
        received_at=timezone.now() - timedelta(days=35)
    )
    new = deliver("donation_received", days_ago=1)

    # The completed payment's message went out 40 days ago; the refund's is still pending (SNS was down
    # since, say); the donation's went out yesterday.
    messages = {m.event_type: m for m in OutboxMessage.objects.all()}
    assert set(messages) == {"payment_completed", "refund_sent", "donation_received"}
    long_ago = timezone.now() - timedelta(days=40)
    OutboxMessage.objects.filter(pk=messages["payment_completed"].pk).update(
        created_at=long_ago, published_at=long_ago
    )
    OutboxMessage.objects.filter(pk=messages["refund_sent"].pk).update(created_at=long_ago)
    OutboxMessage.objects.filter(pk=messages["donation_received"].pk).update(
        published_at=timezone.now() - timedelta(days=1)
    )

    # Notices (nobody listens here, so each was delivered when written): the completion's was delivered
    # 40 days ago; the refund's, written then, only 2 days ago (a receiver failed until it was fixed); the
    # donation's yesterday. And one, 40 days old, still waits for a receiver that keeps raising.
    notices = {n.signal: n for n in Notice.objects.all()}
    assert set(notices) == {"payment_completed", "refund_sent", "donation_received"}
    assert all(notice.delivered_at for notice in notices.values())
    Notice.objects.filter(pk=notices["payment_completed"].pk).update(
        created_at=long_ago, delivered_at=long_ago
    )
    Notice.objects.filter(pk=notices["refund_sent"].pk).update(
        created_at=long_ago, delivered_at=timezone.now() - timedelta(days=2)
    )
    Notice.objects.filter(pk=notices["donation_received"].pk).update(
        created_at=timezone.now() - timedelta(days=1), delivered_at=timezone.now() - timedelta(days=1)
    )
    failing = Notice.objects.create(
        signal="payment_completed",
        payment=old[0].payment,
        webhook_event=old[0],
        receivers=[
            {
                "receiver": "shop.receivers.mark_paid",
                "state": "failed",
                "attempts": 12,
                "last_attempt_at": long_ago.isoformat(),
                "error": RECEIVER_TRACEBACK,
            }
        ],
        created_at=long_ago,
        next_attempt_at=timezone.now() + timedelta(minutes=30),
        attempts=12,
    )
    return {
        "old": [*old, invalid, failed],
        "new": new,
        "messages": messages,
        "notices": {**notices, "failing": failing},
    }


def test_old_bodies_are_emptied_and_the_rest_of_each_row_kept(history):
    payments, refunds = table(Payment), table(Refund)
    before = {row["id"]: row for row in table(WebhookEvent)}
    notices_before = {row["id"]: row for row in table(Notice)}

    report = purge_events(timedelta(days=30))

    assert (report.events, report.outbox_messages, report.notices, report.dry_run) == (4, 1, 1, False)
    after = {row["id"]: row for row in table(WebhookEvent)}
    for event in history["old"]:
        row, was = after[event.pk], before[event.pk]
        assert row["raw_body"] == "" and row["error"] == ""
        assert row["purged_at"] is not None
        kept = ("received_at", "request_id", "source_ip", "event_type", "idempotency_key", "outcome")
        assert {key: row[key] for key in kept} == {key: was[key] for key in kept}
        assert (row["payment_id"], row["refund_id"]) == (was["payment_id"], was["refund_id"])
    assert after[history["new"].pk] == before[history["new"].pk]  # newer than the cutoff: untouched

    # No customer data is left in the old events; the business rows are exactly as they were.
    old_rows = json.dumps([after[event.pk] for event in history["old"]], default=str)
    for value in customer_data() | {"7875550102"}:
        assert value not in old_rows
    assert table(Payment) == payments and table(Refund) == refunds
    assert Payment.objects.filter(name="Luis Ortiz", email="luis@example.com").exists()

    # Outbox: the old published message is gone; the old pending one and the recent published one stay.
    remaining = set(OutboxMessage.objects.values_list("event_type", flat=True))
    assert remaining == {"refund_sent", "donation_received"}

    # Notices: the one delivered 40 days ago is gone; those delivered since stay, and so does the one still
    # waiting for its receiver, however old, exactly as it was: its traceback is what shows what to fix.
    notices = history["notices"]
    notices_after = {row["id"]: row for row in table(Notice)}
    assert set(notices_after) == {
        notices[name].pk for name in ("refund_sent", "donation_received", "failing")
    }
    assert notices_after == {pk: notices_before[pk] for pk in notices_after}
    [failure] = WebhookEvent.objects.get(pk=history["old"][0].pk).receiver_errors
    assert (failure["receiver"], failure["error"]) == ("shop.receivers.mark_paid", RECEIVER_TRACEBACK)


def test_a_purged_event_still_makes_a_redelivery_a_duplicate(history):
    purge_events(timedelta(days=30))
    again = processor.process(
        parse(sample("ecommerce_completed.production")), raw_body=sample("ecommerce_completed.production")
    )
    assert again.outcome == WebhookEvent.Outcome.DUPLICATE


def test_a_dry_run_counts_and_changes_nothing(history):
    models = (WebhookEvent, OutboxMessage, Notice, Payment, Refund)
    tables = [table(model) for model in models]
    report = purge_events(timedelta(days=30), dry_run=True)
    assert (report.events, report.outbox_messages, report.notices, report.dry_run) == (4, 1, 1, True)
    assert [table(model) for model in models] == tables

    assert purge_events(timedelta(days=30)).events == 4
    assert (OutboxMessage.objects.count(), Notice.objects.count()) == (2, 3)


def test_a_second_run_purges_nothing_more(history):
    first = purge_events(timedelta(days=30))
    purged_at = dict(WebhookEvent.objects.values_list("pk", "purged_at"))
    second = purge_events(timedelta(days=30))
    assert (first.events, first.outbox_messages, first.notices) == (4, 1, 1)
    assert (second.events, second.outbox_messages, second.notices) == (0, 0, 0)
    assert dict(WebhookEvent.objects.values_list("pk", "purged_at")) == purged_at
    dry = purge_events(timedelta(days=30), dry_run=True)
    assert (dry.events, dry.outbox_messages, dry.notices) == (0, 0, 0)


def test_a_longer_period_keeps_more(history):
    assert purge_events(timedelta(days=38)).events == 2  # the 40-day-old deliveries, not the 35-day-old
    assert purge_events(timedelta(days=30)).events == 2  # then the others
    # Notices go by when they were delivered, not by when they were written.
    assert purge_events(timedelta(days=3)).notices == 0  # the refund's, delivered 2 days ago, stays
    assert purge_events(timedelta(hours=36)).notices == 1
    assert Notice.objects.filter(pk=history["notices"]["failing"].pk).exists()


def test_the_work_is_done_in_batches(settings, monkeypatch):
    settings.ATHM_OUTBOX = True
    long_ago = timezone.now() - timedelta(days=10)
    for number in range(5):
        processor.record(f'{{"attempt": {number}}}', Outcome.INVALID, error="not an event")
    WebhookEvent.objects.update(received_at=long_ago)
    for number in range(5):
        processor.process(
            parse(sample("payment_received").replace("215070500-", f"21507050{number}-")), raw_body="{}"
        )
    OutboxMessage.objects.update(published_at=long_ago)
    Notice.objects.update(delivered_at=long_ago)
    assert OutboxMessage.objects.count() == Notice.objects.count() == 5
    monkeypatch.setattr(retention, "BATCH_SIZE", 2)

    with CaptureQueriesContext(connection) as queries:
        report = purge_events(timedelta(days=5))

    assert (report.events, report.outbox_messages, report.notices) == (5, 5, 5)
    assert not OutboxMessage.objects.exists() and not Notice.objects.exists()
    purged = WebhookEvent.objects.filter(purged_at__isnull=False)
    assert purged.count() == 5 and set(purged.values_list("raw_body", flat=True)) == {""}
    statements = [query["sql"].upper() for query in queries.captured_queries]
    purges = [sql for sql in statements if sql.startswith("UPDATE") and "ATHM_CORE_WEBHOOKEVENT" in sql]
    deletes = [sql for sql in statements if sql.startswith("DELETE") and "ATHM_CORE_OUTBOXMESSAGE" in sql]
    notices = [sql for sql in statements if sql.startswith("DELETE") and "ATHM_CORE_NOTICE" in sql]
    assert len(purges) == len(deletes) == len(notices) == 3  # 2 + 2 + 1 of each


def test_the_retention_period_must_be_positive():
    with pytest.raises(ValueError, match="must be positive"):
        purge_events(timedelta(0))


# --- athm purge_events ------------------------------------------------------------------------------------


def purge_command(*args: str) -> str:
    out = io.StringIO()
    call_command("purge_events", *args, stdout=out)
    return out.getvalue()


def test_the_command_prints_what_it_did(history):
    dry = purge_command("--older-than", "30", "--dry-run")
    assert dry.startswith("would empty the stored bodies of 4 webhook events received before ")
    assert "delete 1 outbox messages published and 1 notices delivered before then" in dry
    assert "(dry run: nothing changed)" in dry
    assert WebhookEvent.objects.filter(purged_at__isnull=False).count() == 0

    done = purge_command("--older-than", "30")
    assert done.startswith("emptied the stored bodies of 4 webhook events received before ")
    assert "deleted 1 outbox messages published and 1 notices delivered before then" in done
    assert purge_command("--older-than", "30").startswith("emptied the stored bodies of 0 webhook events")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "0"], "--older-than must be at least 1 day for a purge .* --dry-run counts"),
        (["--older-than", "-5"], "--older-than cannot be negative"),
        (["--older-than", "-5", "--dry-run"], "--older-than cannot be negative"),
        (["--older-than", "thirty"], "invalid int value"),
        ([], "the following arguments are required: --older-than"),
    ],
)
def test_the_command_refuses_a_period_that_is_not_a_number_of_days(history, args, message):
    tables = [table(model) for model in (WebhookEvent, OutboxMessage, Notice)]
    with pytest.raises(CommandError, match=message):
        purge_command(*args)
    assert [table(model) for model in (WebhookEvent, OutboxMessage, Notice)] == tables


def test_a_dry_run_counts_with_any_period_zero_days_included(history):
    """`--older-than 0 --dry-run` counts everything a purge could ever take, and changes nothing."""
    tables = [table(model) for model in (WebhookEvent, OutboxMessage, Notice)]
    dry = purge_command("--older-than", "0", "--dry-run")
    assert dry.startswith("would empty the stored bodies of ")
    assert "(dry run: nothing changed)" in dry
    assert [table(model) for model in (WebhookEvent, OutboxMessage, Notice)] == tables


def test_the_command_help_says_payments_and_refunds_stay():
    from athm_core.management.commands.purge_events import Command

    help_text = " ".join(Command().create_parser("athm", "purge_events").format_help().split())
    assert "Payments and refunds, customer name, phone and email included" in help_text
    assert "never touched" in help_text
    assert "pending messages and unfinished notices stay" in help_text
