"""Second chances: a failing receiver is recorded and counted, `athm redispatch` calls it (and only it) again,
`athm reprocess` applies a stored body once, and the admin offers both while staying read-only."""

import json
import subprocess

import pytest
from django.core.management import CommandError, call_command
from django.forms.models import model_to_dict
from django.utils import timezone

from athm_core import processor, replay
from athm_core.ath.client import FIND_PAYMENT_PATH
from athm_core.events import EventType
from athm_core.models import Notice, OutboxMessage, Payment, Refund, WebhookEvent
from athm_core.payloads import parse_data
from athm_core.signals import payment_completed, payment_received, refund_sent
from tests.conftest import ROOT, sample, sample_data
from tests.fake_athm import fake_athm_fixture  # noqa: F401
from tests.test_local import athm_command, run_with_the_admin

pytestmark = pytest.mark.django_db(transaction=True)

Outcome = WebhookEvent.Outcome
COMPLETED = "ecommerce_completed.documented"
REFUND = "refund_sent.documented"  # refunds the COMPLETED sample's payment


class Flaky:
    """A receiver that raises on its first ``failures`` calls, and records every call."""

    def __init__(self, failures: int = 1) -> None:
        self.failures = failures
        self.calls: list[dict] = []

    def __call__(self, sender, **kwargs):
        kwargs.pop("signal", None)
        self.calls.append({"sender": sender, **kwargs})
        if len(self.calls) <= self.failures:
            raise LookupError("the order service is down")


# Module-level receivers, so that their recorded name ("tests.test_replay.<name>") finds them again.
flaky_completed = Flaky()
flaky_received = Flaky()
flaky_refund = Flaky()


def on_completed(sender, **kwargs):
    flaky_completed(sender, **kwargs)


def on_received(sender, **kwargs):
    flaky_received(sender, **kwargs)


def on_refund(sender, **kwargs):
    flaky_refund(sender, **kwargs)


@pytest.fixture
def flaky():
    """Connect the flaky receivers (each raising once), fresh for every test."""
    for counter in (flaky_completed, flaky_received, flaky_refund):
        counter.calls.clear()
        counter.failures = 1
    payment_completed.connect(on_completed)
    payment_received.connect(on_received)
    refund_sent.connect(on_refund)
    yield
    payment_completed.disconnect(on_completed)
    payment_received.disconnect(on_received)
    refund_sent.disconnect(on_refund)


def deliver(name: str, **changes) -> WebhookEvent:
    data = {**sample_data(name), **changes}
    return processor.process(parse_data(data), raw_body=json.dumps(data), source_ip="192.0.2.1")


def snapshot() -> dict:
    """Every business row, field by field, and the counts of everything else."""
    return {
        "payments": [model_to_dict(p) | {"updated_at": p.updated_at} for p in Payment.objects.order_by("pk")],
        "refunds": [model_to_dict(r) | {"created_at": r.created_at} for r in Refund.objects.order_by("pk")],
        "events": WebhookEvent.objects.count(),
        "outbox": OutboxMessage.objects.count(),
    }


def run(command: str, *args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


# --- receiver failures ----------------------------------------------------------------------------------


def test_a_failing_receiver_answers_200_is_recorded_counted_and_redispatched_once(
    lambda_handler, signal_log, flaky, capfd
):
    response = lambda_handler.post(sample(COMPLETED))
    assert response.status == 200 and response.json()["outcome"] == "applied"
    assert signal_log.names() == ["payment_completed"]  # the other receiver ran
    assert len(flaky_completed.calls) == 1
    payment = Payment.objects.get()
    assert payment.status == Payment.Status.COMPLETED  # the committed change stands
    record = WebhookEvent.objects.get(pk=response.json()["event_id"])
    [failure] = record.receiver_errors
    assert failure["signal"] == "payment_completed"
    assert failure["receiver"] == "tests.test_replay.on_completed"
    assert (
        failure["error"].startswith("Traceback")
        and "LookupError: the order service is down" in failure["error"]
    )
    assert failure["payment_id"] == payment.pk
    assert '"ReceiverFailed":[1.0]' in capfd.readouterr().out

    before = snapshot()
    output = run("redispatch", str(record.pk))
    assert f"event {record.pk}: sent: sent payment_completed to tests.test_replay.on_completed" in output
    assert len(flaky_completed.calls) == 2  # only the failed receiver was called again
    notice = Notice.objects.get(payment=payment)
    assert flaky_completed.calls[1] == {"sender": Payment, "payment": payment, "notice_id": notice.notice_id}
    assert signal_log.names() == ["payment_completed"]  # the receiver that had succeeded was not
    assert WebhookEvent.objects.get(pk=record.pk).receiver_errors == []
    assert snapshot() == before  # no row changed, no event or message added

    assert f"event {record.pk}: nothing to do" in run("redispatch", str(record.pk))
    assert len(flaky_completed.calls) == 2
    assert snapshot() == before


def test_redispatch_failed_sends_each_events_missed_signals_with_their_rows(signal_log, flaky):
    completed = deliver(COMPLETED)
    refunded = deliver(REFUND)
    received = deliver("payment_received")
    healthy = deliver("donation_received")
    assert [len(WebhookEvent.objects.get(pk=e.pk).receiver_errors) for e in (completed, refunded)] == [1, 1]
    assert WebhookEvent.objects.get(pk=received.pk).receiver_errors[0]["signal"] == "payment_received"
    assert WebhookEvent.objects.get(pk=healthy.pk).receiver_errors == []
    flaky_received.failures = 2  # this one raises once more
    before = snapshot()
    calls_before = list(signal_log.calls)

    with pytest.raises(CommandError, match="1 event"):
        run("redispatch", "--failed")
    assert signal_log.calls == calls_before
    refund = Refund.objects.get()
    notice_id = Notice.objects.get(refund=refund).notice_id
    assert flaky_refund.calls[1] == {
        "sender": Refund,
        "refund": refund,
        "payment": refund.payment,
        "notice_id": notice_id,
    }
    assert [len(c.calls) for c in (flaky_completed, flaky_received, flaky_refund)] == [2, 2, 2]
    assert WebhookEvent.objects.get(pk=completed.pk).receiver_errors == []
    assert WebhookEvent.objects.get(pk=refunded.pk).receiver_errors == []
    [still] = WebhookEvent.objects.get(pk=received.pk).receiver_errors
    assert still["attempts"] == 2 and "LookupError" in still["error"]
    assert snapshot() == before

    assert "sent payment_received" in run("redispatch", "--failed")
    assert [len(c.calls) for c in (flaky_completed, flaky_received, flaky_refund)] == [2, 3, 2]
    assert list(replay.events_with_failed_receivers()) == []
    assert "0 event(s)" in run("redispatch", "--failed")
    assert snapshot() == before


def test_a_receiver_no_longer_connected_keeps_its_failure(flaky):
    record = deliver(COMPLETED)
    payment_completed.disconnect(on_completed)
    [result] = replay.redispatch([record])
    assert (
        result.status == replay.STILL_FAILING
        and "no receiver tests.test_replay.on_completed" in result.detail
    )
    assert len(WebhookEvent.objects.get(pk=record.pk).receiver_errors) == 1
    assert len(flaky_completed.calls) == 1


def test_redispatch_needs_ids_or_failed():
    with pytest.raises(CommandError, match="--failed"):
        run("redispatch")


# --- reprocess -------------------------------------------------------------------------------------------


def test_a_processing_bug_is_kept_and_the_event_reprocessed_once_it_is_fixed(
    lambda_handler, signal_log, monkeypatch
):
    def bug(event):
        raise ZeroDivisionError("a bug in a transition")

    monkeypatch.setitem(processor._TRANSITIONS, EventType.ECOMMERCE_COMPLETED, bug)
    response = lambda_handler.post(sample(COMPLETED))
    assert response.status == 500
    failed = WebhookEvent.objects.get(pk=response.json()["event_id"])
    assert failed.outcome == Outcome.FAILED
    assert "ZeroDivisionError: a bug in a transition" in failed.error and "Traceback" in failed.error
    assert Payment.objects.count() == 0 and signal_log.calls == []

    # Still broken: the new attempt is kept as failed too, with its own traceback.
    with pytest.raises(CommandError, match="refused or failed"):
        run("reprocess", str(failed.pk))
    again = WebhookEvent.objects.latest("pk")
    assert again.outcome == Outcome.FAILED and "ZeroDivisionError" in again.error
    assert again.request_id == f"reprocess of #{failed.pk}" and again.raw_body == failed.raw_body
    assert [e.pk for e in replay.failed_events()] == [again.pk]  # the latest failed delivery only

    monkeypatch.undo()  # the bug is fixed
    output = run("reprocess", "--failed")
    applied = WebhookEvent.objects.latest("pk")
    assert f"event {again.pk}: applied (recorded as event {applied.pk})" in output
    assert applied.outcome == Outcome.APPLIED and applied.payment == Payment.objects.get()
    assert signal_log.names() == ["payment_completed"]
    original = WebhookEvent.objects.get(pk=failed.pk)
    assert (original.outcome, original.error, original.raw_body) == (
        Outcome.FAILED,
        failed.error,
        failed.raw_body,
    )  # the audit stays
    assert list(replay.failed_events()) == []

    before = snapshot()
    [result] = replay.reprocess([failed.pk])
    assert result.status == Outcome.DUPLICATE
    assert signal_log.names() == ["payment_completed"]
    after = snapshot()
    assert after["payments"] == before["payments"] and after["events"] == before["events"] + 1


def test_invalid_purged_rejected_and_unknown_events_are_refused(signal_log):
    invalid = processor.record("{nope", Outcome.INVALID, error="body: is not valid JSON")
    body = sample(COMPLETED)
    purged = processor.record(body, Outcome.FAILED, error="Traceback ...", event=parse_data(json.loads(body)))
    WebhookEvent.objects.filter(pk=purged.pk).update(raw_body="", error="", purged_at=timezone.now())
    rejected = processor.record(
        body, Outcome.REJECTED, error="ATH Móvil reports CANCEL", event=parse_data(json.loads(body))
    )
    count = WebhookEvent.objects.count()

    results = replay.reprocess([invalid.pk, purged.pk, rejected.pk, 999999])
    assert [r.status for r in results] == [replay.REFUSED] * 4
    assert "still not a valid event" in results[0].detail
    assert "purged" in results[1].detail
    assert "rejected" in results[2].detail
    assert "no such webhook event" in results[3].detail
    assert WebhookEvent.objects.count() == count and Payment.objects.count() == 0
    assert signal_log.calls == []
    with pytest.raises(CommandError, match="3 event"):
        run("reprocess", str(invalid.pk), str(purged.pk), str(rejected.pk))


def test_reprocess_verifies_ecommerce_events_like_a_delivery(signal_log, settings, fake_athm):
    body = sample(COMPLETED)
    data = json.loads(body)
    failed = processor.record(body, Outcome.FAILED, error="Traceback ...", event=parse_data(data))
    settings.ATHM_VERIFY, settings.ATHM_PUBLIC_TOKEN, settings.ATHM_VERIFY_TIMEOUT = True, "pk_test", 0.5

    def ath_says(status: str) -> None:
        found = {
            "ecommerceStatus": status,
            "total": data["total"],
            "referenceNumber": data["referenceNumber"],
        }
        fake_athm.answer(FIND_PAYMENT_PATH, 200, {"status": "success", "data": found})

    # No check given (the admin, `athm reprocess`): ATHM_VERIFIER, ATH Móvil's findPayment, as a delivery.
    ath_says("CANCEL")
    [result] = replay.reprocess([failed])
    assert result.status == Outcome.REJECTED and "CANCEL" in result.detail
    assert [r.json["ecommerceId"] for r in fake_athm.requests_to(FIND_PAYMENT_PATH)] == [data["ecommerceId"]]

    fake_athm.answer(FIND_PAYMENT_PATH, 503, {"status": "error", "message": "down for maintenance"})
    count = WebhookEvent.objects.count()
    [result] = replay.reprocess([failed])
    assert result.status == replay.REFUSED and "cannot be verified now" in result.detail
    assert WebhookEvent.objects.count() == count and not Payment.objects.exists()

    # A check given replaces it.
    [result] = replay.reprocess([failed], check=lambda event: "ATH Móvil reports CANCEL, not COMPLETED")
    assert result.status == Outcome.REJECTED
    assert WebhookEvent.objects.get(pk=result.new_event_id).error == "ATH Móvil reports CANCEL, not COMPLETED"

    def unavailable(event):
        raise TimeoutError("ATH Móvil is slow")

    count = WebhookEvent.objects.count()
    [result] = replay.reprocess([failed], check=unavailable)
    assert result.status == replay.REFUSED and "cannot be verified now" in result.detail
    assert WebhookEvent.objects.count() == count
    assert signal_log.calls == []

    ath_says("COMPLETED")
    [result] = replay.reprocess([failed])
    assert result.status == Outcome.APPLIED
    assert Payment.objects.get().status == Payment.Status.COMPLETED
    assert signal_log.names() == ["payment_completed"]


def test_the_athm_command_line_has_both_commands(child_env):
    for command in ("reprocess", "redispatch"):
        result = subprocess.run(
            [*athm_command(), command], env=child_env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 1 and "name the webhook event ids, or use --failed" in result.stderr
        # Run without the functions' ATHM_RECEIVERS, the command says what that means.
        assert "athm: ATHM_RECEIVERS is not set, so no receiver of yours is loaded" in result.stderr
    with_receivers = {**child_env, "ATHM_RECEIVERS": "tests.heard.receivers"}
    result = subprocess.run(
        [*athm_command(), "redispatch"],
        env=with_receivers,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "ATHM_RECEIVERS is not set" not in result.stderr


# --- the admin's actions ----------------------------------------------------------------------------------

ADMIN_SCRIPT = """
import json
from django.contrib.auth.models import User
from django.test import Client
from django.test.utils import setup_test_environment
from athm_core import processor
from athm_core.models import Payment, WebhookEvent
from athm_core.payloads import parse
from athm_core.signals import payment_completed

calls = []

def flaky_receiver(sender, payment, **kwargs):
    calls.append(payment.pk)
    if len(calls) == 1:
        raise LookupError("down")

setup_test_environment()  # the test client then keeps each response's context (its messages)
payment_completed.connect(flaky_receiver)
completed = open("tests/samples/ecommerce_completed.production.json").read()
applied = processor.process(parse(completed), raw_body=completed)
received = open("tests/samples/payment_received.json").read()
failed = processor.record(received, "failed", error="Traceback ...", event=parse(received))
invalid = processor.record("{nope", "invalid", error="body: is not valid JSON")
User.objects.create_superuser("admin", "admin@example.com", "pw")
User.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
url = "/admin/athm_core/webhookevent/"

def act(action, *events):
    data = {"action": action, "_selected_action": [e.pk for e in events], "index": 0}
    response = client.post(url, data, follow=True)
    return response.status_code, [str(m) for m in response.context["messages"]]

client = Client()
client.login(username="admin", password="pw")
listing = client.get(url).content.decode()
result = {
    "offered": ["reprocess_selected" in listing, "redispatch_selected" in listing],
    "redispatch": act("redispatch_selected", applied),
    "calls": list(calls),
    "errors_after": WebhookEvent.objects.get(pk=applied.pk).receiver_errors,
    "reprocess": act("reprocess_selected", failed, invalid),
    "payments": Payment.objects.count(),
    "events": WebhookEvent.objects.count(),
    "edit": client.post(f"{url}{applied.pk}/change/", {"outcome": "failed"}).status_code,
}
staff = Client()
staff.login(username="staff", password="pw")
from django.contrib.auth.models import Permission
User.objects.get(username="staff").user_permissions.add(Permission.objects.get(codename="view_webhookevent"))
page = staff.get(url)
result["staff_page"] = page.status_code
result["staff_offered"] = "reprocess_selected" in page.content.decode()
print(json.dumps(result))
"""


def test_the_admin_offers_reprocess_and_redispatch_and_reports_results(child_env, tmp_path):
    outcome = run_with_the_admin(ADMIN_SCRIPT, child_env, tmp_path)
    assert outcome["offered"] == [True, True]
    status, messages = outcome["redispatch"]
    assert status == 200
    assert any("sent payment_completed" in m and "flaky_receiver" in m for m in messages), messages
    assert outcome["calls"] == [1, 1] and outcome["errors_after"] == []
    status, messages = outcome["reprocess"]
    assert status == 200
    assert any(": applied (recorded as event" in m for m in messages), messages
    assert any("refused: its body is still not a valid event" in m for m in messages), messages
    assert outcome["payments"] == 2 and outcome["events"] == 4
    assert outcome["edit"] == 403  # still read-only otherwise
    assert outcome["staff_page"] == 200 and outcome["staff_offered"] is False


def test_a_recorded_failure_of_an_unknown_signal_is_kept_and_named():
    record = deliver("payment_received")
    now = timezone.now()
    failure = {"receiver": "shop.receivers.on_refund", "state": "failed", "error": "Traceback ..."}
    Notice.objects.create(
        signal="payment_refunded",
        payment=record.payment,
        webhook_event=record,
        receivers=[failure],
        created_at=now,
        next_attempt_at=now,
    )
    [result] = replay.redispatch([record.pk])
    assert result.status == replay.STILL_FAILING
    assert "'payment_refunded' is not a signal of athm_core.signals" in result.detail
    [kept] = WebhookEvent.objects.get(pk=record.pk).receiver_errors
    assert kept["receiver"] == failure["receiver"] and kept["attempts"] == 1
    assert "'payment_refunded' is not a signal" in kept["error"]
