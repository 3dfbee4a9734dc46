"""Reconciliation with ATH Móvil's transaction report (a fake ATH Móvil on 127.0.0.1): transactions whose
webhook never came are created once with their signals and outbox messages, recorded ones are left alone,
differing amounts are reported, and the report's quirks (renamed fields, ranges too large, no records)
are handled. ``athm reconcile`` in this process, the scheduled Lambda entry point in a child process."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from athm_core.ath import client
from athm_core.models import OutboxMessage, Payment, Refund, WebhookEvent
from tests.conftest import ROOT, sample_data
from tests.fake_athm import (
    Answer,
    FakeAthm,
    fake_athm_fixture,  # noqa: F401
)

PATH = "/transactions/v4/transactionReport"
PUBLIC = "pub-7d2f0a9c1e3b5d7f"
PRIVATE = "priv-NEVER-PRINTED-9e8d7c6b5a4f3e2d"

LOST_ECOMMERCE_ID = "5f0c2a1e-0000-4c86-8f0e-1f8a2b7c3d99"
LOST_REFERENCE = "215070999-402894c185ab1be40185acfe61c20099"


def report_row(name: str, **changes: Any) -> dict[str, Any]:
    """A sample webhook in the report's shape: ``totalRefundAmount`` and an integer daily id."""
    row = sample_data(name)
    if "totalRefundedAmount" in row:
        row["totalRefundAmount"] = row.pop("totalRefundedAmount")
    daily = row.pop("dailyTransactionId", None) or row.pop("dailyTransactionID", None)
    if daily:
        row["dailyTransactionID"] = int(daily)
    row.update(changes)
    return row


def lost_payment(**changes: Any) -> dict[str, Any]:
    """A completed eCommerce payment whose webhook never came."""
    return report_row(
        "ecommerce_completed.production",
        **{"ecommerceId": LOST_ECOMMERCE_ID, "referenceNumber": LOST_REFERENCE, **changes},
    )


def lost_refund(**changes: Any) -> dict[str, Any]:
    """A refund of the lost payment (the same reference number), whose webhook never came either."""
    return report_row(
        "refund_sent.production",
        **{
            "referenceNumber": LOST_REFERENCE,
            "total": 5,
            "dailyTransactionID": 12,
            "date": "2026-11-21 10:00:00",
            **changes,
        },
    )


def no_records() -> dict[str, Any]:
    return {"status": "error", "errorcode": client.NO_RECORDS, "message": "No records found"}


def too_large() -> dict[str, Any]:
    return {"status": "error", "errorcode": client.RANGE_TOO_LARGE, "message": "Range too large"}


class _ByBody(dict):
    """The fake's answers for the report path chosen per request, from the body of the latest request."""

    def __init__(self, fake: FakeAthm, choose) -> None:
        super().__init__()
        self._fake = fake
        self._choose = choose

    def get(self, path, default=None):
        if path != PATH:
            return default
        # The fake holds its lock here, and has just appended this request.
        return self._choose(self._fake.requests[-1].json)


def answer_by_range(fake: FakeAthm, choose) -> None:
    """``choose(body) -> Answer`` decides each report answer (the fake alone answers one way per path)."""
    fake._answers = _ByBody(fake, choose)


@pytest.fixture
def ath(fake_athm, settings, transactional_db):
    """The fake ATH Móvil, both tokens set, and signals and outbox as deployed with a topic."""
    settings.ATHM_PUBLIC_TOKEN = PUBLIC
    settings.ATHM_PRIVATE_TOKEN = PRIVATE
    settings.ATHM_OUTBOX = True
    return fake_athm


def reconcile(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("reconcile", *args, stdout=out, stderr=err)
    text = out.getvalue() + err.getvalue()
    assert PRIVATE not in text
    return text


def failed(*args: str) -> str:
    with pytest.raises(CommandError) as raised:
        reconcile(*args)
    message = str(raised.value)
    assert PRIVATE not in message
    return message


def summary(text: str) -> str:
    return text.splitlines()[1]


# --- what ATH Móvil receives --------------------------------------------------------------------------


def test_the_report_is_asked_with_both_tokens_and_puerto_rico_wall_times(ath):
    ath.answer(PATH, 200, [])

    reconcile("--from", "2026-11-20", "--to", "2026-11-21")

    [request] = ath.requests
    assert (request.method, request.path) == ("GET", PATH)
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "publicToken": PUBLIC,
        "privateToken": PRIVATE,
        "fromDate": "2026-11-20 00:00:00",
        "toDate": "2026-11-21 23:59:59",
    }


def test_aware_datetimes_are_sent_as_puerto_rico_time(ath):
    from datetime import UTC

    ath.answer(PATH, 200, [])
    client.transaction_report(
        datetime(2026, 11, 20, 4, 0, tzinfo=UTC),
        datetime(2026, 11, 22, 3, 59, 59, tzinfo=UTC),
        public_token=PUBLIC,
        private_token=PRIVATE,
    )
    body = ath.requests[0].json
    assert (body["fromDate"], body["toDate"]) == ("2026-11-20 00:00:00", "2026-11-21 23:59:59")


# --- (a) a lost payment, (c) a lost refund ---------------------------------------------------------------


def test_a_payment_whose_webhook_never_came_is_created_once_with_its_signal_and_message(ath, signal_log):
    ath.answer(PATH, 200, [lost_payment()])

    out = reconcile("--from", "2026-11-20", "--to", "2026-11-20")

    payment = Payment.objects.get(ecommerce_id=LOST_ECOMMERCE_ID)
    assert payment.status == Payment.Status.COMPLETED
    assert payment.reference_number == LOST_REFERENCE
    assert (payment.total, payment.fee, payment.net_amount) == (
        Decimal("26.00"),
        Decimal("0.60"),
        Decimal("25.40"),
    )
    assert payment.daily_transaction_id == 8
    assert signal_log.names() == ["payment_completed"]
    assert signal_log.calls[0][2]["payment"].pk == payment.pk
    [message] = OutboxMessage.objects.all()
    assert message.event_type == "payment_completed"
    [record] = WebhookEvent.objects.all()
    assert (record.outcome, record.request_id) == (WebhookEvent.Outcome.APPLIED, "reconcile")
    assert json.loads(record.raw_body) == lost_payment()  # as ATH's report sent it
    assert summary(out).startswith("created 1, already present 0, amount mismatches 0, unreadable 0")
    assert f"ecommerceId={LOST_ECOMMERCE_ID}" in out
    # Ids and amounts only: nothing of the customer.
    for customer in ("Luis", "luis@example.com", "5550102"):
        assert customer not in out


def test_a_refund_whose_webhook_never_came_is_created_and_linked_to_its_payment(ath, signal_log):
    ath.answer(PATH, 200, [lost_refund(), lost_payment()])  # the refund listed first

    out = reconcile("--from", "2026-11-20", "--to", "2026-11-21")

    payment = Payment.objects.get(ecommerce_id=LOST_ECOMMERCE_ID)
    [refund] = Refund.objects.all()
    assert refund.payment_id == payment.pk
    assert refund.amount == Decimal("5.00")
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("5.00")
    assert signal_log.names() == ["payment_completed", "refund_sent"]
    assert sorted(OutboxMessage.objects.values_list("event_type", flat=True)) == [
        "payment_completed",
        "refund_sent",
    ]
    assert summary(out).startswith("created 2,")


def test_app_payments_and_donations_are_reconciled_too(ath, signal_log):
    ath.answer(PATH, 200, [report_row("payment_received"), report_row("donation_received")])

    reconcile("--from", "2026-11-20", "--to", "2026-11-22")

    assert sorted(Payment.objects.values_list("transaction_type", flat=True)) == ["donation", "payment"]
    assert sorted(signal_log.names()) == ["donation_received", "payment_received"]


# --- (b) recorded through the webhook, (i) twice --------------------------------------------------------


def test_a_payment_recorded_by_its_webhook_is_counted_present_and_not_duplicated(
    ath, lambda_handler, signal_log
):
    webhook = sample_data("ecommerce_completed.production")
    assert lambda_handler.post(json.dumps(webhook)).status == 200
    assert signal_log.names() == ["payment_completed"]
    ath.answer(PATH, 200, [report_row("ecommerce_completed.production")])

    out = reconcile("--from", "2026-11-20", "--to", "2026-11-20")

    assert Payment.objects.count() == 1
    assert signal_log.names() == ["payment_completed"]
    assert OutboxMessage.objects.count() == 1
    assert WebhookEvent.objects.count() == 1  # reconciliation recorded nothing
    assert summary(out).startswith("created 0, already present 1, amount mismatches 0")


def test_rows_in_aths_published_shape_without_an_ecommerce_id_are_found_by_reference(
    ath, lambda_handler, signal_log, settings
):
    settings.ATHM_VERIFY = False
    legacy = sample_data("ecommerce_completed.legacy")
    assert lambda_handler.post(json.dumps(legacy)).json()["outcome"] == "applied"
    lost = {**legacy, "referenceNumber": "402894d5-lost-0001", "metadata1": "order-2047"}
    ath.answer(PATH, 200, [report_row("ecommerce_completed.legacy"), lost])

    out = reconcile("--from", "2026-11-21", "--to", "2026-11-21")

    assert summary(out).startswith("created 1, already present 1, amount mismatches 0"), out
    assert set(Payment.objects.values_list("reference_number", flat=True)) == {
        legacy["referenceNumber"],
        lost["referenceNumber"],
    }
    assert signal_log.names() == ["payment_completed", "payment_completed"]
    assert (
        reconcile("--from", "2026-11-21", "--to", "2026-11-21")
        .splitlines()[1]
        .startswith("created 0, already present 2")
    )


def test_a_refund_recorded_by_its_webhook_is_present(ath, lambda_handler, signal_log):
    assert lambda_handler.post(json.dumps(sample_data("refund_sent.production"))).status == 200
    ath.answer(PATH, 200, [report_row("refund_sent.production")])

    out = reconcile("--from", "2026-11-21", "--to", "2026-11-21")

    assert Refund.objects.count() == 1
    assert summary(out).startswith("created 0, already present 1,")


def test_a_refund_the_report_dates_otherwise_than_its_webhook_is_still_present(ath, lambda_handler):
    # A refund's idempotency key holds its date; the same reference and daily number that day is the same.
    assert lambda_handler.post(json.dumps(sample_data("refund_sent.production"))).status == 200
    ath.answer(PATH, 200, [report_row("refund_sent.production", date="2026-11-21 09:20:44.0")])

    out = reconcile("--from", "2026-11-21", "--to", "2026-11-21")

    assert Refund.objects.count() == 1
    assert summary(out).startswith("created 0, already present 1, amount mismatches 0,")


def test_running_twice_creates_nothing_the_second_time(ath, signal_log):
    ath.answer(PATH, 200, [lost_payment(), lost_refund()])

    first = reconcile("--from", "2026-11-20", "--to", "2026-11-21")
    second = reconcile("--from", "2026-11-20", "--to", "2026-11-21")

    assert summary(first).startswith("created 2, already present 0,")
    assert summary(second).startswith("created 0, already present 2, amount mismatches 0")
    assert (Payment.objects.count(), Refund.objects.count()) == (1, 1)
    assert signal_log.names() == ["payment_completed", "refund_sent"]
    assert OutboxMessage.objects.count() == 2
    assert WebhookEvent.objects.count() == 2


# --- (d) amounts that differ, (e) unreadable rows, ignored rows -----------------------------------------


def test_differing_amounts_are_reported_and_nothing_is_changed(ath, lambda_handler, signal_log):
    assert lambda_handler.post(json.dumps(sample_data("ecommerce_completed.production"))).status == 200
    ath.answer(PATH, 200, [report_row("ecommerce_completed.production", total="27.00", fee="0.62")])
    before = Payment.objects.get()

    out = reconcile("--from", "2026-11-20", "--to", "2026-11-20")

    after = Payment.objects.get()
    assert (after.total, after.fee, after.net_amount, after.updated_at) == (
        before.total,
        before.fee,
        before.net_amount,
        before.updated_at,
    )
    assert summary(out).startswith("created 0, already present 1, amount mismatches 1,")
    assert (
        f"mismatch payment ecommerceId={before.ecommerce_id} referenceNumber={before.reference_number}: "
        "total stored 26.00, report 27.00; fee stored 0.60, report 0.62"
    ) in out
    assert signal_log.names() == ["payment_completed"]
    assert WebhookEvent.objects.count() == 1


def test_unreadable_rows_are_reported_and_the_others_still_applied(ath, signal_log):
    broken = lost_payment(ecommerceId="other-checkout", referenceNumber="215070998-x", total="abc")
    ath.answer(PATH, 200, [broken, "not an object", lost_payment()])

    out = reconcile("--from", "2026-11-20", "--to", "2026-11-20")

    assert summary(out).startswith("created 1, already present 0, amount mismatches 0, unreadable 2,")
    assert "unreadable row 1 (ecommerceId=other-checkout referenceNumber=215070998-x): total:" in out
    assert "unreadable row 2: body: must be a JSON object" in out
    assert Payment.objects.get().ecommerce_id == LOST_ECOMMERCE_ID
    assert "Luis" not in out


def test_rows_that_moved_no_money_are_ignored_with_a_count(ath, signal_log):
    ath.answer(
        PATH,
        200,
        [
            report_row("ecommerce_cancelled.production"),
            report_row("simulated"),
            report_row("ecommerce_expired"),
        ],
    )

    out = reconcile("--from", "2026-11-20", "--to", "2026-11-20")

    assert summary(out).endswith("ignored 3")
    assert "ignored 1 ecommerce/cancel" in out
    assert "ignored 1 simulated/completed" in out
    assert (Payment.objects.count(), WebhookEvent.objects.count(), signal_log.names()) == (0, 0, [])


# --- (f) a range too large, (g) no records ---------------------------------------------------------------


def test_a_range_too_large_is_asked_again_in_halves_down_to_single_days(ath, signal_log):
    def choose(body: dict[str, Any]) -> Answer:
        days = (date.fromisoformat(body["toDate"][:10]) - date.fromisoformat(body["fromDate"][:10])).days + 1
        if days > 3:
            return Answer(400, too_large())
        if body["fromDate"][:10] <= "2026-11-20" <= body["toDate"][:10]:
            return Answer(200, [lost_payment()])
        return Answer(200, no_records())

    answer_by_range(ath, choose)

    out = reconcile("--from", "2026-11-13", "--to", "2026-11-22")

    ranges = [(r.json["fromDate"], r.json["toDate"]) for r in ath.requests]
    assert ranges == [
        ("2026-11-13 00:00:00", "2026-11-22 23:59:59"),
        ("2026-11-13 00:00:00", "2026-11-17 23:59:59"),
        ("2026-11-13 00:00:00", "2026-11-15 23:59:59"),
        ("2026-11-16 00:00:00", "2026-11-17 23:59:59"),
        ("2026-11-18 00:00:00", "2026-11-22 23:59:59"),
        ("2026-11-18 00:00:00", "2026-11-20 23:59:59"),
        ("2026-11-21 00:00:00", "2026-11-22 23:59:59"),
    ]
    assert all(r.json["privateToken"] == PRIVATE for r in ath.requests)
    assert "1 transaction(s) in ATH Móvil's report, 7 request(s)" in out
    assert Payment.objects.get().ecommerce_id == LOST_ECOMMERCE_ID
    assert signal_log.names() == ["payment_completed"]


def test_a_single_day_still_too_large_fails(ath):
    ath.answer(PATH, 200, too_large())

    message = failed("--from", "2026-11-20", "--to", "2026-11-21")

    assert "BTRA_0026" in message
    # Both days, then the first day alone, which ATH still refuses: the second is not asked.
    assert [r.json["fromDate"] for r in ath.requests] == ["2026-11-20 00:00:00", "2026-11-20 00:00:00"]


@pytest.mark.parametrize("status", [200, 400])
def test_no_records_is_an_empty_report_not_an_error(ath, status):
    ath.answer(PATH, status, no_records())

    out = reconcile("--from", "2026-11-20", "--to", "2026-11-21")

    assert "0 transaction(s) in ATH Móvil's report" in out
    assert summary(out).startswith("created 0, already present 0, amount mismatches 0, unreadable 0")


# --- (h) ATH Móvil down or slow ------------------------------------------------------------------------


def test_a_slow_ath_fails_the_command_and_nothing_is_written(ath, monkeypatch, signal_log):
    monkeypatch.setattr(client, "TIMEOUT", 0.3)

    # The first half of the range answers; the second never does: the first half is not applied either.
    def choose(body: dict[str, Any]) -> Answer:
        if body["fromDate"] == "2026-11-13 00:00:00" and body["toDate"].startswith("2026-11-22"):
            return Answer(400, too_large())
        if body["fromDate"].startswith("2026-11-13"):
            return Answer(200, [lost_payment()])
        return Answer(200, [], delay=5)

    answer_by_range(ath, choose)

    message = failed("--from", "2026-11-13", "--to", "2026-11-22")

    assert message.startswith("reconciliation failed, nothing was changed: ATH Móvil:")
    assert "did not answer within 0.3 s" in message
    assert (Payment.objects.count(), WebhookEvent.objects.count(), OutboxMessage.objects.count()) == (0, 0, 0)
    assert signal_log.names() == []


def test_an_unreachable_ath_fails_the_command(ath, settings):
    settings.ATHM_API_BASE_URL = "http://127.0.0.1:9"  # discard port: nothing listens

    message = failed("--from", "2026-11-20", "--to", "2026-11-20")

    assert "cannot reach http://127.0.0.1:9" in message
    assert Payment.objects.count() == 0


def test_an_error_that_quotes_the_private_token_does_not_show_it(ath):
    ath.answer(
        PATH, 401, {"status": "error", "message": f"invalid token {PRIVATE}", "errorcode": "BTRA_0001"}
    )

    message = failed("--from", "2026-11-20", "--to", "2026-11-20")

    assert "invalid token ********" in message
    assert "BTRA_0001" in message


def test_missing_tokens_are_refused_before_anything_is_sent(ath, settings):
    settings.ATHM_PRIVATE_TOKEN = ""

    message = failed("--from", "2026-11-20", "--to", "2026-11-20")

    assert "ATHM_PRIVATE_TOKEN" in message
    assert ath.requests == []


def test_a_backwards_range_is_refused(ath):
    assert "after" in failed("--from", "2026-11-21", "--to", "2026-11-20")
    assert ath.requests == []


# --- (j) dry run ------------------------------------------------------------------------------------------


def test_a_dry_run_says_what_it_would_create_and_writes_nothing(ath, signal_log):
    ath.answer(PATH, 200, [lost_payment(), lost_refund()])

    out = reconcile("--from", "2026-11-20", "--to", "2026-11-21", "--dry-run")

    assert summary(out).startswith("would create 2, already present 0,")
    assert f"would create ecommerce.completed ecommerceId={LOST_ECOMMERCE_ID}" in out
    assert f"would create refund.sent referenceNumber={LOST_REFERENCE} total=5.00" in out
    assert out.rstrip().endswith("dry run: nothing was written")
    assert (Payment.objects.count(), Refund.objects.count(), WebhookEvent.objects.count()) == (0, 0, 0)
    assert OutboxMessage.objects.count() == 0
    assert signal_log.names() == []


# --- (k) the scheduled Lambda entry point -----------------------------------------------------------------

LAMBDA_SCRIPT = """
import json
from handler.reconcile import lambda_handler

class Context:
    function_name = "athm-reconcile"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:athm-reconcile"
    aws_request_id = "c0ffee00-0000-4000-8000-000000000001"

    def get_remaining_time_in_millis(self):
        return 60000

print("RESULT " + json.dumps(lambda_handler(EVENT, Context())))
"""


def run_lambda(env: dict[str, str], event: dict[str, Any]) -> subprocess.CompletedProcess:
    code = LAMBDA_SCRIPT.replace("EVENT", repr(event))
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_the_scheduled_lambda_reconciles_in_its_own_process(fake_athm, child_env):
    fake_athm.answer(PATH, 200, [lost_payment(), lost_refund()])
    env = {
        **child_env,
        "ATHM_API_BASE_URL": fake_athm.base_url,
        "ATHM_PUBLIC_TOKEN": PUBLIC,
        "ATHM_PRIVATE_TOKEN": PRIVATE,
        "ATHM_VERIFY": "0",
    }

    result = run_lambda(env, {"from": "2026-11-20", "to": "2026-11-21"})

    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    outcome = json.loads(line.removeprefix("RESULT "))
    assert outcome["created"] == 2 and outcome["present"] == 0 and outcome["mismatches"] == 0
    assert PRIVATE not in result.stdout + result.stderr
    assert "Luis" not in result.stdout + result.stderr
    [request] = fake_athm.requests
    assert request.json == {
        "publicToken": PUBLIC,
        "privateToken": PRIVATE,
        "fromDate": "2026-11-20 00:00:00",
        "toDate": "2026-11-21 23:59:59",
    }
    payment = Payment.objects.get(ecommerce_id=LOST_ECOMMERCE_ID)
    assert Refund.objects.get().payment_id == payment.pk

    again = run_lambda(env, {"from": "2026-11-20", "to": "2026-11-21"})
    assert again.returncode == 0, again.stderr
    [line] = [line for line in again.stdout.splitlines() if line.startswith("RESULT ")]
    assert json.loads(line.removeprefix("RESULT "))["created"] == 0
    assert (Payment.objects.count(), Refund.objects.count()) == (1, 1)


def test_the_scheduled_lambda_fails_when_ath_does_not_answer(fake_athm, child_env):
    fake_athm.answer(PATH, 503, raw=b"<html>Service Unavailable</html>")
    env = {
        **child_env,
        "ATHM_API_BASE_URL": fake_athm.base_url,
        "ATHM_PUBLIC_TOKEN": PUBLIC,
        "ATHM_PRIVATE_TOKEN": PRIVATE,
        "ATHM_VERIFY": "0",
    }

    result = run_lambda(env, {"days": 2})

    assert result.returncode != 0
    assert "AthmApiError" in result.stderr
    assert PRIVATE not in result.stdout + result.stderr
    assert Payment.objects.count() == 0
    # The last two days, Puerto Rico time: yesterday 00:00:00 to today 23:59:59.
    body = fake_athm.requests[0].json
    assert body["fromDate"].endswith(" 00:00:00") and body["toDate"].endswith(" 23:59:59")
