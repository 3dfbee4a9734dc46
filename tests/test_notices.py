"""Durable notices, in one process: written with the change, delivered once per receiver, failures kept and
retried with a backoff, finished by a redelivery or the relay, and never called twice by two processes."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from athm_core import dispatch, processor, replay
from athm_core.models import Notice, OutboxMessage, Payment, Refund, WebhookEvent
from athm_core.payloads import parse_data
from athm_core.signals import payment_completed, refund_sent
from athm_core.text import storable
from tests.conftest import sample, sample_data

pytestmark = pytest.mark.django_db(transaction=True)

COMPLETED = "ecommerce_completed.documented"
REFUND = "refund_sent.documented"  # refunds the COMPLETED sample's payment


def deliver(name: str, **changes) -> WebhookEvent:
    data = {**sample_data(name), **changes}
    return processor.process(parse_data(data), raw_body=json.dumps(data))


class Receiver:
    """A module-level-named receiver that records its calls and raises while ``failing``."""

    def __init__(self, name: str) -> None:
        self.calls: list[dict] = []
        self.failing: Exception | None = None
        self.__qualname__ = self.__name__ = name
        self.__module__ = __name__

    def __call__(self, sender, **kwargs):
        kwargs.pop("signal")
        self.calls.append(kwargs)
        if self.failing is not None:
            raise self.failing


@pytest.fixture
def receivers():
    """Two receivers of payment_completed and one of refund_sent, connected in that order."""
    first, second, refunds = Receiver("first"), Receiver("second"), Receiver("refunds")
    payment_completed.connect(first, weak=False)
    payment_completed.connect(second, weak=False)
    refund_sent.connect(refunds, weak=False)
    yield first, second, refunds
    payment_completed.disconnect(first)
    payment_completed.disconnect(second)
    refund_sent.disconnect(refunds)


def age(notice: Notice, minutes: float) -> None:
    """Make ``notice`` look written (and due) ``minutes`` ago."""
    then = timezone.now() - timedelta(minutes=minutes)
    Notice.objects.filter(pk=notice.pk).update(created_at=then, next_attempt_at=then)


# --- written with the change -------------------------------------------------------------------------------


def test_a_change_writes_its_notice_in_its_transaction_with_the_receivers_of_the_moment(receivers, settings):
    settings.ATHM_OUTBOX = True
    first, _, _ = receivers
    record = deliver(COMPLETED)
    notice = Notice.objects.get()
    assert notice.webhook_event == record and notice.payment == record.payment and notice.refund is None
    assert notice.signal == "payment_completed" and notice.delivered_at is not None
    assert [(e["receiver"], e["state"], e["attempts"]) for e in notice.receivers] == [
        ("tests.test_notices.first", "delivered", 1),
        ("tests.test_notices.second", "delivered", 1),
    ]
    # Receivers get the notice's id; the SNS message of the same change carries it as its id.
    assert first.calls == [{"payment": record.payment, "notice_id": notice.notice_id}]
    assert OutboxMessage.objects.get().event_id == notice.notice_id
    assert json.loads(OutboxMessage.objects.get().body)["id"] == str(notice.notice_id)

    assert deliver(COMPLETED).outcome == "duplicate"  # a duplicate writes no notice
    assert Notice.objects.count() == 1 and len(first.calls) == 1


def test_a_change_that_rolls_back_leaves_no_notice(receivers):
    with pytest.raises(RuntimeError), transaction.atomic():
        deliver(COMPLETED)
        raise RuntimeError("the caller's transaction fails")
    assert Notice.objects.count() == Payment.objects.count() == 0
    assert receivers[0].calls == []


# --- failures: kept, retried, never twice for the receiver that succeeded ---------------------------------


def test_a_failing_receiver_keeps_its_notice_pending_and_its_writes_undone(receivers):
    first, second, _ = receivers

    def write_then_raise(sender, payment, **kwargs):
        Payment.objects.filter(pk=payment.pk).update(metadata_2="written by a receiver that then raised")
        raise LookupError("no order for \x00 \ud800 customer text")

    second.failing = None
    payment_completed.connect(write_then_raise, weak=False)
    try:
        record = deliver(COMPLETED)
    finally:
        payment_completed.disconnect(write_then_raise)
    report = record.dispatch_report
    assert (report.delivered, report.failed, report.left_pending) == (0, 1, 1)
    notice = Notice.objects.get()
    assert notice.delivered_at is None and notice.attempts == 1
    assert timedelta(seconds=40) < notice.next_attempt_at - timezone.now() < timedelta(seconds=80)
    states = {e["receiver"].rsplit(".", 1)[-1]: e["state"] for e in notice.receivers}
    assert states == {"first": "delivered", "second": "delivered", "write_then_raise": "failed"}
    [failure] = record.receiver_errors
    # Stored on every database: NUL and the lone surrogate replaced.
    assert "LookupError: no order for \ufffd \ufffd customer text" in failure["error"]
    assert failure["signal"] == "payment_completed" and failure["payment_id"] == record.payment_id
    # The failing receiver's write was rolled back.
    assert Payment.objects.get().metadata_2 == sample_data(COMPLETED)["metadata2"]
    assert [len(first.calls), len(second.calls)] == [1, 1]


def test_the_relay_leaves_new_notices_alone_then_retries_with_a_backoff(receivers):
    first, second, _ = receivers
    second.failing = LookupError("the order service is down")
    record = deliver(COMPLETED)
    notice = Notice.objects.get()
    assert replay.finish_pending().delivered == 0  # its backoff is not over
    age(notice, 2)
    second.failing = LookupError("still down")
    report = replay.finish_pending()
    assert (report.delivered, report.failed, report.pending) == (0, 1, 1)
    notice.refresh_from_db()
    assert notice.attempts == 2
    assert timedelta(seconds=90) < notice.next_attempt_at - timezone.now() < timedelta(seconds=150)
    assert [len(first.calls), len(second.calls)] == [1, 2]  # the receiver that succeeded was left alone

    second.failing = None
    assert replay.finish_pending().delivered == 0  # still waiting out its backoff
    report = replay.finish_pending(retry_now=True)
    assert (report.delivered, report.failed, report.pending) == (1, 0, 0)
    assert [len(first.calls), len(second.calls)] == [1, 3]
    assert WebhookEvent.objects.get(pk=record.pk).receiver_errors == []
    assert replay.finish_pending(retry_now=True).delivered == 0


def test_a_notice_left_by_a_dead_process_is_finished_by_the_redelivery(receivers):
    first, second, _ = receivers
    deliver(COMPLETED)
    notice = Notice.objects.get()
    # As if the process had died after the first receiver's commit: the second never ran.
    entries = notice.receivers
    entries[1] = {"receiver": entries[1]["receiver"], "state": "pending"}
    Notice.objects.filter(pk=notice.pk).update(receivers=entries, delivered_at=None)
    second.calls.clear()

    redelivery = deliver(COMPLETED)
    assert redelivery.outcome == "duplicate"
    assert redelivery.dispatch_report.late == 1
    assert [len(first.calls), len(second.calls)] == [1, 1]
    assert Notice.objects.get().delivered_at is not None
    assert deliver(COMPLETED).dispatch_report.calls == []  # nothing left: nothing called


def test_a_notice_left_within_its_grace_period_waits_for_the_relay(receivers):
    deliver(COMPLETED)
    notice = Notice.objects.get()
    entries = [{"receiver": e["receiver"], "state": "pending"} for e in notice.receivers]
    Notice.objects.filter(pk=notice.pk).update(receivers=entries, delivered_at=None)
    receivers[0].calls.clear()
    assert replay.finish_pending().delivered == 0  # a minute for the delivery that wrote it
    age(notice, 1.5)
    assert replay.finish_pending().delivered == 1
    assert len(receivers[0].calls) == 1


def test_a_receiver_not_connected_in_this_process_is_not_forgotten(receivers):
    first, second, _ = receivers
    deliver(COMPLETED)
    notice = Notice.objects.get()
    entries = [{"receiver": e["receiver"], "state": "pending"} for e in notice.receivers]
    Notice.objects.filter(pk=notice.pk).update(receivers=entries, delivered_at=None)
    payment_completed.disconnect(second)
    report = replay.finish_pending(retry_now=True)
    assert (report.delivered, report.failed, report.pending) == (0, 1, 1)
    [failure] = WebhookEvent.objects.get().receiver_errors
    assert failure["error"] == "no receiver tests.test_notices.second is connected to payment_completed"
    payment_completed.connect(second, weak=False)
    assert replay.finish_pending(retry_now=True).delivered == 1
    assert [len(first.calls), len(second.calls)] == [2, 2]


def test_a_receiver_removed_on_purpose_is_given_up_by_hand(receivers):
    _, second, _ = receivers
    second.failing = LookupError("down")
    deliver(COMPLETED)
    deliver("payment_received")  # another signal: nothing to give up there
    payment_completed.disconnect(second)  # renamed in a deploy, say
    out = StringIO()
    call_command("redispatch", "--forget", "tests.test_notices.second", stdout=out)
    assert out.getvalue().strip() == "tests.test_notices.second given up on 1 unfinished notice(s)"
    notice = Notice.objects.get(signal="payment_completed")
    assert notice.delivered_at is not None
    assert [e["state"] for e in notice.receivers] == ["delivered", "forgotten"]
    assert dispatch.backlog().pending == 0 and replay.finish_pending(retry_now=True).failed == 0
    assert len(second.calls) == 1
    with pytest.raises(CommandError, match="--forget takes no event ids"):
        call_command("redispatch", "--forget", "x", "--failed")


def test_a_notice_another_process_is_delivering_is_left_to_it(receivers):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has no row locks: one writer at a time already keeps deliveries apart")
    first, _, _ = receivers
    first.failing = LookupError("down")
    deliver(COMPLETED)
    first.failing = None
    notice = Notice.objects.get()
    locked, release = threading.Event(), threading.Event()

    def hold_the_lock():  # another process, in the middle of delivering this notice
        try:
            with transaction.atomic():
                list(Notice.objects.select_for_update().filter(pk=notice.pk))
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert locked.wait(10)
    try:
        assert replay.redispatch([notice.webhook_event_id])[0].status == replay.STILL_FAILING
        assert deliver(COMPLETED).dispatch_report.calls == []  # the redelivery does not wait for it
        assert replay.finish_pending(retry_now=True).delivered == 0
        assert len(first.calls) == 1
    finally:
        release.set()
        holder.join()
    assert replay.finish_pending(retry_now=True).delivered == 1
    assert len(first.calls) == 2


# --- refunds waiting for their payment -------------------------------------------------------------------


def test_the_relay_ties_waiting_refunds_that_a_dead_process_left_and_announces_them_once(
    receivers, monkeypatch
):
    _, _, refunds = receivers
    deliver(REFUND)
    # The payment's delivery dies after its commit, before it ties the refund.
    monkeypatch.setattr(processor, "_link_waiting_refunds", lambda *args: ([], []))
    deliver(COMPLETED)
    monkeypatch.undo()
    assert Refund.objects.get().payment is None and refunds.calls == []

    report = replay.finish_pending()
    assert (report.linked, report.delivered, report.late) == (1, 1, 0)
    refund = Refund.objects.select_related("payment").get()
    assert refund.payment is not None and refund.payment.total_refunded_amount == refund.amount
    notice = Notice.objects.get(refund=refund)
    # Shown with the refund's own delivery, where the admin and `athm redispatch` look.
    assert notice.webhook_event == WebhookEvent.objects.get(event_type="refund.sent")
    assert refunds.calls == [{"refund": refund, "payment": refund.payment, "notice_id": notice.notice_id}]
    assert replay.finish_pending().linked == 0 and len(refunds.calls) == 1


# --- what the webhook answers and counts ----------------------------------------------------------------


def test_the_webhook_counts_failed_late_and_left_notices(lambda_handler, receivers, capfd):
    first, second, _ = receivers
    second.failing = LookupError("down")
    assert lambda_handler.post(sample(COMPLETED)).status == 200
    out = capfd.readouterr().out
    assert '"ReceiverFailed":[1.0]' in out and '"NoticesLeftPending":[1.0]' in out
    second.failing = None
    response = lambda_handler.post(sample(COMPLETED))
    assert response.json()["outcome"] == "duplicate"
    assert '"NoticesDeliveredLate":[1.0]' in capfd.readouterr().out
    assert [len(first.calls), len(second.calls)] == [1, 2]


def test_after_the_commit_nothing_turns_the_answer_into_an_error(lambda_handler, receivers, monkeypatch):
    def database_gone(*args, **kwargs):
        from django.db import OperationalError

        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(dispatch, "_locked", database_gone)
    response = lambda_handler.post(sample(COMPLETED))
    assert response.status == 200 and response.json()["outcome"] == "applied"
    monkeypatch.undo()
    notice = Notice.objects.get()
    assert notice.delivered_at is None and receivers[0].calls == []
    assert lambda_handler.post(sample(COMPLETED)).json()["outcome"] == "duplicate"
    assert Notice.objects.get().delivered_at is not None and len(receivers[0].calls) == 1


# --- text, and failures kept before notices existed --------------------------------------------------------


def test_storable_text_replaces_only_nul_and_lone_surrogates():
    assert storable("Luis\x00Ortiz \ud83d café 😀") == "Luis\ufffdOrtiz \ufffd café 😀"


def test_the_migration_turns_failures_kept_on_events_into_notices():
    before = [("athm_core", "0004_webhookevent_rejected")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    now = timezone.now()
    payment = old.get_model("athm_core", "Payment").objects.create(
        transaction_type="ecommerce", status="completed", total="3.00", reference_number="ref-1"
    )
    failure = {
        "signal": "payment_completed",
        "receiver": "shop.receivers.mark_paid",
        "error": "Traceback ...",
        "payment_id": payment.pk,
        "attempts": 2,
    }
    events = old.get_model("athm_core", "WebhookEvent").objects
    recent = events.create(
        received_at=now, raw_body="{}", outcome="applied", payment_id=payment.pk, receiver_errors=[failure]
    )
    # Past the retention period (purged): kept for the record, not replayed.
    purged = events.create(
        received_at=now - timedelta(days=400),
        purged_at=now - timedelta(days=300),
        raw_body="",
        outcome="applied",
        payment_id=payment.pk,
        receiver_errors=[{**failure, "error": ""}],
    )
    events.create(received_at=now, raw_body="{}", outcome="applied", payment_id=payment.pk)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    replayed = Notice.objects.get(webhook_event=recent.pk)
    assert replayed.signal == "payment_completed" and replayed.payment_id == payment.pk
    assert replayed.delivered_at is None and replayed.attempts == 2
    assert replayed.created_at >= now and replayed.next_attempt_at >= now  # due now, aged from the upgrade
    [entry] = replayed.receivers
    assert (entry["receiver"], entry["state"], entry["attempts"], entry["error"]) == (
        "shop.receivers.mark_paid",
        "failed",
        2,
        "Traceback ...",
    )
    [kept] = WebhookEvent.objects.get(pk=recent.pk).receiver_errors
    assert kept["receiver"] == "shop.receivers.mark_paid" and kept["attempts"] == 2
    given_up = Notice.objects.get(webhook_event=purged.pk)
    assert given_up.delivered_at is not None and given_up.receivers[0]["state"] == "forgotten"
    assert Notice.objects.count() == 2 and dispatch.backlog().pending == 1


# --- receivers that break more than themselves --------------------------------------------------------------


def test_a_receiver_that_exits_or_breaks_its_transaction_is_a_failure_like_any_other(
    lambda_handler, receivers
):
    first, _, _ = receivers

    def exits(sender, **kwargs):
        raise SystemExit(3)

    def rolls_back(sender, **kwargs):
        transaction.set_rollback(True)

    def swallows_a_database_error(sender, payment, **kwargs):
        from django.db import DatabaseError

        try:  # on PostgreSQL this leaves the transaction aborted: the commit cannot happen
            with connection.cursor() as cursor:
                cursor.execute("SELECT * FROM no_such_table")
        except DatabaseError:
            pass
        Payment.objects.filter(pk=payment.pk).update(metadata_2="written after a swallowed error")

    odd = [exits, rolls_back, swallows_a_database_error]
    for receiver in odd:
        payment_completed.connect(receiver, weak=False)
    try:
        response = lambda_handler.post(sample(COMPLETED))
    finally:
        for receiver in odd:
            payment_completed.disconnect(receiver)
    assert response.status == 200 and response.json()["outcome"] == "applied"
    notice = Notice.objects.get()
    states = {e["receiver"].rsplit(".", 1)[-1]: (e["state"], e.get("error", "")) for e in notice.receivers}
    assert states["first"] == ("delivered", "") and states["second"] == ("delivered", "")
    assert states["exits"][0] == "failed" and "SystemExit: 3" in states["exits"][1]
    assert states["rolls_back"][0] == "failed"
    assert "the receiver rolled its transaction back" in states["rolls_back"][1]
    swallowed = states["swallows_a_database_error"]
    if connection.vendor == "postgresql":
        assert swallowed[0] == "failed" and "InFailedSqlTransaction" in swallowed[1]
        assert Payment.objects.get().metadata_2 == sample_data(COMPLETED)["metadata2"]
    else:  # the error does not spoil the transaction there
        assert swallowed == ("delivered", "")
    assert len(first.calls) == 1


def test_a_notice_that_cannot_be_delivered_does_not_hold_up_the_others(receivers):
    first, _, _ = receivers
    deliver(COMPLETED)
    deliver(COMPLETED, ecommerceId="checkout-2", referenceNumber="ref-2")
    broken, other = Notice.objects.order_by("id")
    pending = [{"receiver": e["receiver"], "state": "pending"} for e in other.receivers]
    # A notice the code cannot read (written by hand, say), then a good one, both left unfinished.
    Notice.objects.filter(pk=broken.pk).update(receivers=["not an entry"], delivered_at=None)
    Notice.objects.filter(pk=other.pk).update(receivers=pending, delivered_at=None)
    first.calls.clear()
    report = replay.finish_pending(retry_now=True)
    assert (report.delivered, report.pending) == (1, 1)
    assert len(first.calls) == 1 and first.calls[0]["payment"].pk == other.payment_id


def test_a_late_delivery_books_its_next_try_before_calling_anyone(receivers):
    first, _, _ = receivers
    deliver(COMPLETED)
    notice = Notice.objects.get()
    pending = [{"receiver": e["receiver"], "state": "pending"} for e in notice.receivers]
    Notice.objects.filter(pk=notice.pk).update(receivers=pending, delivered_at=None)
    first.failing = KeyboardInterrupt()  # as a receiver that hangs until Lambda ends the process
    age(notice, 2)
    with pytest.raises(KeyboardInterrupt):
        replay.finish_pending()
    notice.refresh_from_db()
    assert notice.attempts == 1 and notice.next_attempt_at > timezone.now() + timedelta(seconds=40)
    first.failing = None
    assert replay.finish_pending().delivered == 0  # not taken again at once, ahead of the others
    assert replay.finish_pending(retry_now=True).delivered == 1


def test_retry_now_takes_every_unfinished_notice_whatever_the_batch(receivers):
    for n in range(5):
        deliver("payment_received", referenceNumber=f"app-{n}")
    deliver(COMPLETED)
    Notice.objects.update(delivered_at=None)
    Notice.objects.filter(signal="payment_completed").update(
        receivers=[{"receiver": "tests.test_notices.first", "state": "pending"}]
    )
    Notice.objects.filter(signal="payment_received").update(receivers=[])  # nobody listens: settled at once
    report = dispatch.deliver_due(retry_now=True, batch=2)
    assert report.delivered == 6 and dispatch.backlog().pending == 0


def test_the_relay_publishes_to_sns_even_when_the_notices_part_fails(make_topic, settings, monkeypatch):
    from handler import relay

    topic = make_topic()
    settings.ATHM_SNS_TOPIC_ARN, arn = "", settings.ATHM_SNS_TOPIC_ARN
    deliver("payment_received")  # written while SNS was not reachable
    settings.ATHM_SNS_TOPIC_ARN = arn

    def broken(**kwargs):
        raise RuntimeError("a bug in the notices' relay")

    monkeypatch.setattr(replay, "finish_pending", broken)
    with pytest.raises(RuntimeError, match="a bug in the notices' relay"):
        relay.run(retry_now=True)
    assert [m.body["type"] for m in topic.messages()] == ["payment_received"]
