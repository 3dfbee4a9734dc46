"""Refunds this system asks ATH Móvil for (athm_core.refunds, ``athm refund``), against the fake ATH Móvil on
127.0.0.1: full and partial refunds; refusals before anything is sent or written; ATH's error codes; no
answer, then the webhook, the transaction report or ``--check``; ATH's answer after the webhook; two
requests at once for the last refundable amount. ``refund_sent`` fires once on every path."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import threading
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.utils import timezone

from athm_core import processor, refunds
from athm_core.ath import client
from athm_core.models import Notice, OutboxMessage, Payment, Refund, WebhookEvent
from athm_core.payloads import PUERTO_RICO, parse
from tests.conftest import ROOT, sample_data
from tests.fake_athm import Answer, fake_athm_fixture  # noqa: F401
from tests.test_local import athm_command

REFUND_PATH = "/api/business-transaction/ecommerce/refund"
REPORT_PATH = "/transactions/v4/transactionReport"
PUBLIC = "pub-7d2f0a9c1e3b5d7f"
PRIVATE = "priv-NEVER-PRINTED-9e8d7c6b5a4f3e2d"
REFERENCE = "215070444-402894c185ab1be40185acfe61c2000c"
REFUND_REFERENCE = "215070999-402894d58d40ae56018d40bf18470002"


@pytest.fixture(name="ath")
def ath_fixture(fake_athm, settings, transactional_db):
    """The fake ATH Móvil, with the business's tokens set, the outbox on and verification off."""
    settings.ATHM_PUBLIC_TOKEN = PUBLIC
    settings.ATHM_PRIVATE_TOKEN = PRIVATE
    settings.ATHM_OUTBOX = True
    settings.ATHM_VERIFY = False  # the webhooks in these tests are not what is tested
    return fake_athm


@pytest.fixture(name="payment")
def payment_fixture(transactional_db) -> Payment:
    """A completed eCommerce payment of 26.00."""
    return Payment.objects.create(
        transaction_type=Payment.TransactionType.ECOMMERCE,
        status=Payment.Status.COMPLETED,
        ecommerce_id="refund-test-checkout",
        reference_number=REFERENCE,
        total=Decimal("26.00"),
    )


def another_payment() -> Payment:
    return Payment.objects.create(
        transaction_type=Payment.TransactionType.ECOMMERCE,
        status=Payment.Status.COMPLETED,
        ecommerce_id="another-checkout",
        reference_number="215070555-another",
        total=Decimal("9.00"),
    )


def success(amount: str, *, refund_reference: str = REFUND_REFERENCE, daily: str = "0009") -> dict[str, Any]:
    """ATH Móvil's answer to a refund: the refund made, and the original transaction it names."""
    return {
        "status": "success",
        "data": {
            "refund": {
                "transactionType": "REFUND",
                "status": "COMPLETED",
                "refundedAmount": amount,
                "date": "2026-11-30 10:27:04.0",
                "referenceNumber": refund_reference,
                "dailyTransactionId": daily,
            },
            "originalTransaction": {
                "ecommerceStatus": "COMPLETED",
                "referenceNumber": REFERENCE,
                "total": 26.0,
                "totalRefundedAmount": float(amount),
            },
        },
    }


def now_in_puerto_rico() -> str:
    return timezone.now().astimezone(PUERTO_RICO).strftime("%Y-%m-%d %H:%M:%S")


def webhook_before_answer(ath: Any, webhook: str, answer: dict[str, Any]) -> None:
    """ATH's refund endpoint answers ``answer`` only after its Refund Sent ``webhook`` has been processed
    (in the fake's server thread): the webhook comes first."""

    def webhook_first(body: Any) -> Answer:
        try:
            processor.process(parse(webhook), raw_body=webhook)
        finally:
            connection.close()
        return Answer(200, answer)

    ath.answer_by(REFUND_PATH, webhook_first)


def refund_webhook(amount: str, reference: str = REFERENCE, **changes: Any) -> str:
    """ATH's Refund Sent webhook for a refund made now, of ``amount``, naming ``reference``."""
    return json.dumps(
        {
            **sample_data("refund_sent.production"),
            "referenceNumber": reference,
            "total": amount,
            "date": now_in_puerto_rico(),
            **changes,
        }
    )


def refund_signals(signal_log) -> list[dict[str, Any]]:
    return [kwargs for name, _, kwargs in signal_log.calls if name == "refund_sent"]


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("refund", *args, stdout=out, stderr=out)
    text = out.getvalue()
    assert PRIVATE not in text
    return text


# --- made -----------------------------------------------------------------------------------------------


def test_a_full_refund_is_asked_of_ath_and_completed_with_its_answer(ath, payment, signal_log):
    ath.answer(REFUND_PATH, 200, success("26.00"))

    refund = refunds.refund(payment, message="Order cancelled")

    [request] = ath.requests_to(REFUND_PATH)
    assert request.method == "POST"
    assert request.json == {
        "publicToken": PUBLIC,
        "privateToken": PRIVATE,
        "referenceNumber": REFERENCE,
        "amount": "26.00",
        "message": "Order cancelled",
    }
    refund.refresh_from_db()
    assert refund.status == Refund.Status.COMPLETED
    assert (refund.amount, refund.payment_id) == (Decimal("26.00"), payment.pk)
    assert refund.refund_reference_number == REFUND_REFERENCE
    assert refund.original_reference_number == REFERENCE
    assert refund.reference_number == REFERENCE  # ATH's deliveries may name it by its payment's
    assert refund.daily_transaction_id == 9
    assert refund.requested_at is not None
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("26.00")
    assert refunds.refundable(payment) == 0
    [sent] = refund_signals(signal_log)
    assert (sent["refund"].pk, sent["payment"].pk) == (refund.pk, payment.pk)
    assert [m.event_type for m in OutboxMessage.objects.all()] == ["refund_sent"]
    assert Notice.objects.get().delivered_at is not None


def test_partial_refunds_then_the_rest(ath, payment, signal_log):
    ath.answer(REFUND_PATH, 200, success("10.00"))
    first = refunds.refund(payment, "10.00")
    ath.answer(REFUND_PATH, 200, success("16.00", refund_reference="215071000-second", daily="0010"))
    rest = refunds.refund(payment)  # all that is still refundable

    assert [r.json["amount"] for r in ath.requests_to(REFUND_PATH)] == ["10.00", "16.00"]
    assert (first.amount, rest.amount) == (Decimal("10.00"), Decimal("16.00"))
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("26.00")
    assert [s["refund"].pk for s in refund_signals(signal_log)] == [first.pk, rest.pk]
    with pytest.raises(refunds.RefundError, match="nothing left to refund"):
        refunds.refund(payment)
    assert len(ath.requests_to(REFUND_PATH)) == 2


# --- refused before anything is sent or written ----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "amount", "message", "why"),
    [
        ({"status": Payment.Status.OPEN}, None, "", "only a completed payment"),
        ({"status": Payment.Status.CANCELLED}, "1.00", "", "only a completed payment"),
        ({}, "26.01", "", "more than the 26.00 still refundable"),
        ({}, "0", "", "must be positive"),
        ({}, "-5.00", "", "must be positive"),
        ({}, "1.005", "", "dollars and cents"),
        ({}, "abc", "", "not an amount"),
        ({}, "1.00", "x" * 51, "51 characters; ATH Móvil takes at most 50"),
        ({"total_refunded_amount": Decimal("26.00")}, None, "", "nothing left to refund"),
    ],
)
def test_refused_before_ath_is_asked(ath, payment, signal_log, change, amount, message, why):
    Payment.objects.filter(pk=payment.pk).update(**change)
    payment.refresh_from_db()

    with pytest.raises(refunds.RefundError, match=why) as raised:
        refunds.refund(payment, amount, message)

    assert raised.value.refund is None
    assert ath.requests == []
    assert not Refund.objects.exists()
    assert signal_log.calls == []


def test_refunds_pending_count_against_what_is_refundable(ath, payment):
    ath.answer(REFUND_PATH, close=True)
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "20.00")

    assert refunds.refundable(payment) == Decimal("6.00")
    with pytest.raises(refunds.RefundError, match="still pending"):
        refunds.refund(payment, "1.00")
    assert len(ath.requests_to(REFUND_PATH)) == 1
    assert Refund.objects.count() == 1


def test_without_the_tokens_nothing_is_sent_or_written(ath, payment, settings):
    settings.ATHM_PRIVATE_TOKEN = ""
    with pytest.raises(ImproperlyConfigured, match="ATHM_PRIVATE_TOKEN"):
        refunds.refund(payment)
    assert ath.requests == [] and not Refund.objects.exists()


def test_over_plain_http_off_this_machine_nothing_is_sent_or_written(ath, payment, settings):
    settings.ATHM_PAYMENTS_API_BASE_URL = "http://payments.athmovil.com"
    with pytest.raises(ImproperlyConfigured, match="https://"):
        refunds.refund(payment)
    assert ath.requests == [] and not Refund.objects.exists()


# --- ATH Móvil says no -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "said"),
    [
        (200, "BTRA_0004", "Amount over the limits"),
        (400, "BTRA_0040", "Message over 50 characters"),
        (400, "BTRA_0017", f"Invalid token {PRIVATE}"),  # ATH quoting the private token back
    ],
)
def test_ath_refusing_marks_the_refund_failed_with_a_clear_message(
    ath, payment, signal_log, caplog, status, code, said
):
    caplog.set_level(logging.DEBUG)
    ath.answer(REFUND_PATH, status, {"status": "error", "message": said, "errorcode": code, "data": None})

    with pytest.raises(refunds.RefundError) as raised:
        refunds.refund(payment, "5.00")

    text = str(raised.value)
    assert text.startswith("ATH Móvil refused the refund: ") and code in text
    assert PRIVATE not in text and PRIVATE not in caplog.text
    refund = Refund.objects.get()
    assert raised.value.refund.pk == refund.pk
    assert refund.status == Refund.Status.FAILED
    assert code in refund.error and PRIVATE not in refund.error
    payment.refresh_from_db()
    assert payment.total_refunded_amount == 0
    assert refunds.refundable(payment) == Decimal("26.00")  # a failed refund holds nothing back
    assert signal_log.calls == [] and not Notice.objects.exists()


def test_a_server_error_without_ath_s_error_shape_leaves_it_pending(ath, payment, signal_log):
    ath.answer(REFUND_PATH, 502, raw=b"<html>Bad gateway</html>")
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "5.00")
    assert Refund.objects.get().status == Refund.Status.PENDING
    assert signal_log.calls == []


# --- no answer: pending, settled by the webhook, --check or reconciliation ------------------------------


def test_a_timeout_leaves_it_pending_and_the_webhook_settles_it_once(
    ath, payment, signal_log, lambda_handler, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(client, "REFUND_TIMEOUT", 0.3)
    ath.answer(REFUND_PATH, 200, success("5.00"), delay=2)

    with pytest.raises(refunds.RefundPending, match="--check") as raised:
        refunds.refund(payment, "5.00")

    pending = raised.value.refund
    assert pending.status == Refund.Status.PENDING and "did not answer" in pending.error
    assert len(ath.requests_to(REFUND_PATH)) == 1  # never asked again
    assert signal_log.calls == []
    assert PRIVATE not in caplog.text

    assert lambda_handler.post(refund_webhook("5.00")).status == 200
    assert lambda_handler.post(refund_webhook("5.00")).status == 200  # its redelivery

    [refund] = Refund.objects.all()
    assert refund.pk == pending.pk and refund.status == Refund.Status.COMPLETED
    assert refund.claimed
    assert [e.outcome for e in WebhookEvent.objects.order_by("pk")] == ["applied", "duplicate"]
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("5.00")
    [sent] = refund_signals(signal_log)
    assert sent["refund"].pk == refund.pk
    assert len(ath.requests_to(REFUND_PATH)) == 1


def test_a_pending_refund_of_another_amount_is_not_taken_by_the_webhook(ath, payment, lambda_handler):
    ath.answer(REFUND_PATH, close=True)
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "5.00")

    lambda_handler.post(refund_webhook("3.00"))  # a refund made in the ATH Business app

    assert sorted((r.amount, r.status) for r in Refund.objects.all()) == [
        (Decimal("3.00"), "completed"),
        (Decimal("5.00"), "pending"),
    ]


def report_refund(amount: str, reference: str = REFERENCE, daily: int | None = 12) -> dict[str, Any]:
    """A Refund Sent row of ATH's transaction report, made now (Puerto Rico time)."""
    row = {
        **sample_data("refund_sent.production"),
        "referenceNumber": reference,
        "total": amount,
        "date": now_in_puerto_rico(),
    }
    row.pop("totalRefundedAmount", None)
    row.pop("dailyTransactionID", None)
    if daily is not None:
        row["dailyTransactionID"] = daily
    return row


def test_check_settles_a_pending_refund_from_the_transaction_report(ath, payment, signal_log):
    ath.answer(REFUND_PATH, close=True)
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "5.00")
    pending = Refund.objects.get()

    # Not in the report yet: still pending, said so.
    ath.answer(REPORT_PATH, 200, {"status": "error", "errorcode": "BTRA_0022", "message": "No records"})
    with pytest.raises(CommandError, match="stays pending"):
        run("--check", str(pending.pk))
    assert Refund.objects.get().status == Refund.Status.PENDING

    # A refund of another amount (left alone), then ours, under its payment's reference number.
    ath.answer(REPORT_PATH, 200, [report_refund("3.00", daily=11), report_refund("5.00")])
    out = run("--check", str(pending.pk))

    assert f"refund {pending.pk} is completed" in out
    report_request = ath.requests_to(REPORT_PATH)[-1].json
    assert report_request["privateToken"] == PRIVATE
    refund = Refund.objects.get(pk=pending.pk)
    assert (refund.status, refund.reference_number, refund.daily_transaction_id) == (
        "completed",
        REFERENCE,
        12,
    )
    assert Refund.objects.count() == 1
    assert [s["refund"].pk for s in refund_signals(signal_log)] == [refund.pk]
    assert len(ath.requests_to(REFUND_PATH)) == 1
    with pytest.raises(CommandError, match="not pending"):
        run("--check", str(pending.pk))


@pytest.mark.parametrize("daily", [12, None])
def test_reconciliation_settles_a_pending_refund(ath, payment, signal_log, daily):
    ath.answer(REFUND_PATH, close=True)
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "5.00")
    ath.answer(REPORT_PATH, 200, [report_refund("5.00", daily=daily)])

    call_command("reconcile", stdout=io.StringIO())
    call_command("reconcile", stdout=io.StringIO())

    [refund] = Refund.objects.all()
    assert refund.status == Refund.Status.COMPLETED and refund.claimed
    assert len(refund_signals(signal_log)) == 1
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("5.00")


# --- ATH's answer and the webhook, in either order -----------------------------------------------------


def test_the_webhook_after_the_answer_is_a_duplicate(ath, payment, signal_log, lambda_handler):
    ath.answer(REFUND_PATH, 200, success("5.00"))
    made = refunds.refund(payment, "5.00")

    # ATH's Refund Sent webhook may name the payment's reference number or the refund's own.
    lambda_handler.post(refund_webhook("5.00", REFUND_REFERENCE))

    [refund] = Refund.objects.all()
    assert refund.pk == made.pk and refund.claimed and refund.status == "completed"
    assert (refund.reference_number, refund.refund_reference_number) == (REFUND_REFERENCE, REFUND_REFERENCE)
    assert WebhookEvent.objects.get().outcome == WebhookEvent.Outcome.DUPLICATE
    assert len(refund_signals(signal_log)) == 1
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("5.00")


def test_the_answer_after_the_webhook_completes_nothing_twice(ath, payment, signal_log):
    def webhook_first(body: Any) -> Answer:
        # ATH's webhook arrives (and is processed, in this server thread) while the answer is on its way.
        webhook = refund_webhook("5.00")
        try:
            assert processor.process(parse(webhook), raw_body=webhook).outcome == "applied"
        finally:
            connection.close()
        return Answer(200, success("5.00"))

    ath.answer_by(REFUND_PATH, webhook_first)
    made = refunds.refund(payment, "5.00")

    [refund] = Refund.objects.all()
    assert refund.pk == made.pk and refund.status == "completed"
    # The answer still recorded.
    assert (refund.original_reference_number, refund.refund_reference_number) == (REFERENCE, REFUND_REFERENCE)
    assert WebhookEvent.objects.get().outcome == WebhookEvent.Outcome.APPLIED
    assert [s["refund"].pk for s in refund_signals(signal_log)] == [refund.pk]
    assert Notice.objects.count() == 1 and OutboxMessage.objects.count() == 1
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("5.00")


def test_after_the_answer_and_the_webhook_the_report_s_row_is_the_same_refund(ath, payment, lambda_handler):
    ath.answer(REFUND_PATH, 200, success("5.00", daily="12"))
    refunds.refund(payment, "5.00")
    lambda_handler.post(refund_webhook("5.00", dailyTransactionID="12"))
    # The report dates it otherwise than the webhook did (its key differs): the same refund all the same.
    ath.answer(REPORT_PATH, 200, [report_refund("5.00", daily=12)])

    call_command("reconcile", stdout=io.StringIO())

    [refund] = Refund.objects.all()
    assert refund.status == "completed"
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("5.00")


# --- each delivery matched to the refund it reports, never to another ----------------------------------


def test_an_app_refund_of_the_same_amount_is_not_taken_for_an_answered_one(
    ath, payment, signal_log, lambda_handler
):
    """ATH's answer gave daily id 9: a Refund Sent naming the payment with daily id 12 is another refund
    (made in the ATH Business app), recorded and announced, never swallowed as a copy of ours."""
    ath.answer(REFUND_PATH, 200, success("5.00", daily="0009"))
    ours = refunds.refund(payment, "5.00")

    lambda_handler.post(refund_webhook("5.00", dailyTransactionID="12"))  # the app's
    lambda_handler.post(refund_webhook("5.00", dailyTransactionID="9"))  # ours

    assert [e.outcome for e in WebhookEvent.objects.order_by("pk")] == ["applied", "duplicate"]
    app = Refund.objects.exclude(pk=ours.pk).get()
    assert (app.amount, app.daily_transaction_id, app.payment_id) == (Decimal("5.00"), 12, payment.pk)
    assert [s["refund"].pk for s in refund_signals(signal_log)] == [ours.pk, app.pk]
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("10.00")


def test_an_app_refund_long_after_an_answered_one_without_a_daily_id_is_its_own(
    ath, payment, signal_log, lambda_handler
):
    answer = success("5.00")
    del answer["data"]["refund"]["dailyTransactionId"]
    ath.answer(REFUND_PATH, 200, answer)
    ours = refunds.refund(payment, "5.00")
    Refund.objects.filter(pk=ours.pk).update(requested_at=timezone.now() - timezone.timedelta(days=2))

    lambda_handler.post(refund_webhook("5.00"))  # made now: not the refund asked for two days ago

    assert Refund.objects.count() == 2
    assert len(refund_signals(signal_log)) == 2
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("10.00")


def test_an_unanswered_refund_is_settled_by_a_webhook_naming_its_own_reference(
    ath, payment, signal_log, lambda_handler
):
    ath.answer(REFUND_PATH, close=True)
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "5.00")

    # The webhook names the refund's own reference number, which only ATH's lost answer said.
    assert lambda_handler.post(refund_webhook("5.00", REFUND_REFERENCE)).status == 200
    lambda_handler.post(refund_webhook("5.00", REFUND_REFERENCE))  # its redelivery

    [refund] = Refund.objects.all()
    assert refund.status == Refund.Status.COMPLETED and refund.claimed
    assert (refund.payment_id, refund.refund_reference_number) == (payment.pk, REFUND_REFERENCE)
    assert [e.outcome for e in WebhookEvent.objects.order_by("pk")] == ["applied", "duplicate"]
    assert [s["refund"].pk for s in refund_signals(signal_log)] == [refund.pk]
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("5.00")


def test_a_webhook_of_another_customer_does_not_settle_an_unanswered_refund(
    ath, payment, signal_log, lambda_handler
):
    Payment.objects.filter(pk=payment.pk).update(phone_number="7875550199")
    ath.answer(REFUND_PATH, close=True)
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "5.00")

    lambda_handler.post(refund_webhook("5.00", REFUND_REFERENCE, phoneNumber="(787) 555-0102"))

    assert Refund.objects.get(requested_at__isnull=False).status == Refund.Status.PENDING
    waiting = Refund.objects.get(requested_at__isnull=True)
    assert waiting.payment is None  # kept, unlinked, visible: not guessed onto our payment


def test_a_second_refund_of_a_payment_waits_for_the_unanswered_one(ath, payment, signal_log):
    """Two unanswered refunds of one payment could not be told apart by ATH's deliveries: refused."""
    ath.answer(REFUND_PATH, close=True)
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "5.00")
    first = Refund.objects.get()

    with pytest.raises(refunds.RefundError, match=rf"refund {first.pk} of 5.00 is still pending"):
        refunds.refund(payment, "5.00")

    assert len(ath.requests_to(REFUND_PATH)) == 1
    assert Refund.objects.count() == 1


def test_unanswered_refunds_of_one_amount_for_two_payments_are_not_guessed_between(
    ath, payment, signal_log, lambda_handler
):
    other = another_payment()
    ath.answer(REFUND_PATH, close=True)
    for each in (payment, other):
        with pytest.raises(refunds.RefundPending):
            refunds.refund(each, "5.00")

    lambda_handler.post(refund_webhook("5.00", REFUND_REFERENCE))

    assert list(Refund.objects.filter(requested_at__isnull=False).values_list("status", flat=True)) == [
        "pending",
        "pending",
    ]
    assert Refund.objects.get(requested_at__isnull=True).payment is None
    assert refund_signals(signal_log) == []


def test_the_answer_naming_a_refund_kept_unlinked_takes_it_over(ath, payment, signal_log, lambda_handler):
    """The webhook came first and could not be matched (two unanswered refunds of that amount): ATH's
    answer, naming its reference number, ties it to our refund: one refund, announced once."""
    other = another_payment()
    ath.answer(REFUND_PATH, close=True)
    with pytest.raises(refunds.RefundPending):
        refunds.refund(other, "5.00")

    webhook_before_answer(ath, refund_webhook("5.00", REFUND_REFERENCE), success("5.00"))
    made = refunds.refund(payment, "5.00")

    mine = Refund.objects.filter(payment=payment)
    [refund] = mine
    assert refund.pk == made.pk and refund.status == "completed" and refund.claimed
    assert refund.refund_reference_number == REFUND_REFERENCE
    assert not Refund.objects.filter(payment__isnull=True).exists()  # no orphan left
    assert WebhookEvent.objects.get().refund_id == refund.pk
    assert [s["refund"].pk for s in refund_signals(signal_log)] == [refund.pk]
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("5.00")
    assert Refund.objects.get(payment=other).status == "pending"


def test_check_settles_an_unanswered_refund_whose_report_row_names_its_own_reference(
    ath, payment, signal_log
):
    ath.answer(REFUND_PATH, close=True)
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "5.00")
    pending = Refund.objects.get()
    ath.answer(REPORT_PATH, 200, [report_refund("5.00", REFUND_REFERENCE)])

    text = run("--check", str(pending.pk))

    pending.refresh_from_db()
    assert pending.status == "completed" and "completed" in text
    assert len(refund_signals(signal_log)) == 1


@pytest.mark.parametrize("report_daily", [12, None])
@pytest.mark.parametrize(
    ("webhook_names", "report_names"), [(REFUND_REFERENCE, REFERENCE), (REFERENCE, REFUND_REFERENCE)]
)
def test_the_webhook_and_the_report_may_name_the_refund_by_either_number(
    ath, payment, signal_log, lambda_handler, webhook_names, report_names, report_daily
):
    """Whether or not the report's row carries the daily id."""
    ath.answer(REFUND_PATH, 200, success("5.00", daily="12"))
    made = refunds.refund(payment, "5.00")
    lambda_handler.post(refund_webhook("5.00", webhook_names, dailyTransactionID="12"))
    ath.answer(REPORT_PATH, 200, [report_refund("5.00", report_names, daily=report_daily)])

    call_command("reconcile", stdout=io.StringIO())

    [refund] = Refund.objects.all()
    assert refund.pk == made.pk
    assert [s["refund"].pk for s in refund_signals(signal_log)] == [made.pk]
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("5.00")


def test_an_app_refund_does_not_take_an_answered_refund_without_a_daily_id(
    ath, payment, signal_log, lambda_handler
):
    """ATH's answer gave no daily id: a Refund Sent naming the payment, dated away from the answer's date,
    is not taken for ours; ours, when its webhook names its own number, is ours, tied to the payment."""
    answer = success("5.00")
    del answer["data"]["refund"]["dailyTransactionId"]
    ath.answer(REFUND_PATH, 200, answer)  # dated 10:27:04 (Puerto Rico)
    ours = refunds.refund(payment, "5.00")

    lambda_handler.post(refund_webhook("5.00", REFERENCE, dailyTransactionID="12"))  # the app's, made now
    lambda_handler.post(refund_webhook("5.00", REFUND_REFERENCE, dailyTransactionID="9"))  # ours

    assert Refund.objects.filter(payment=payment).count() == 2
    assert Refund.objects.get(pk=ours.pk).reference_number == REFUND_REFERENCE
    assert len(refund_signals(signal_log)) == 2
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("10.00")


def test_another_amount_whose_webhook_came_before_the_answer_is_counted_once(ath, payment, signal_log):
    """ATH refunded 4.00 of the 5.00 asked for; its webhook (naming the payment, with the daily id the
    answer then gives) was recorded as a refund of its own: the answer makes that one the refund asked
    for, never a second."""

    webhook_before_answer(ath, refund_webhook("4.00", dailyTransactionID="9"), success("4.00", daily="0009"))
    made = refunds.refund(payment, "5.00")

    [refund] = Refund.objects.all()
    assert refund.pk == made.pk and refund.amount == Decimal("4.00") and refund.status == "completed"
    assert refund.requested_at is not None and refund.refund_reference_number == REFUND_REFERENCE
    assert [s["refund"].pk for s in refund_signals(signal_log)] == [refund.pk]
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("4.00")
    assert [a["kind"] for a in payment.anomalies] == ["refund_amount_differs"]


@pytest.mark.parametrize("answered", ["0.00", 0, "-5.00", "abc"])
def test_an_answer_without_a_positive_amount_keeps_the_amount_asked_for(ath, payment, signal_log, answered):
    answer = success("5.00")
    answer["data"]["refund"]["refundedAmount"] = answered
    ath.answer(REFUND_PATH, 200, answer)

    made = refunds.refund(payment, "5.00")

    made.refresh_from_db()
    assert (made.amount, made.status) == (Decimal("5.00"), "completed")
    [sent] = refund_signals(signal_log)
    assert sent["refund"].amount == Decimal("5.00")


def test_a_completed_refund_is_never_marked_failed(ath, payment):
    ath.answer(REFUND_PATH, 200, success("5.00"))
    made = refunds.refund(payment, "5.00")
    with pytest.raises(CommandError, match="is completed, not pending"):
        run("--fail", str(made.pk), "--yes")


def test_refund_and_find_payment_warn_without_the_receivers(child_env):
    """Both announce changes (refund_sent, payment_completed): run without ATHM_RECEIVERS, they say so."""
    for command in ("refund", "find_payment"):
        result = subprocess.run(
            [*athm_command(), command], env=child_env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode != 0  # no payment, no ecommerceId: refused
        assert "athm: ATHM_RECEIVERS is not set, so no receiver of yours is loaded" in result.stderr


def test_a_refund_is_not_marked_failed_while_its_answer_may_still_come(ath, payment):
    ath.answer(REFUND_PATH, close=True)
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "5.00")
    pending = Refund.objects.get()

    with pytest.raises(CommandError, match="answer may still be on its way"):
        run("--fail", str(pending.pk), "--yes")

    assert Refund.objects.get().status == "pending"


def test_an_answer_after_the_refund_was_marked_failed_completes_it_once(ath, payment, signal_log):
    def marked_failed_meanwhile(body: Any) -> Answer:
        try:
            pending = Refund.objects.get()
            Refund.objects.filter(pk=pending.pk).update(requested_at=timezone.now() - timedelta(minutes=5))
            refunds.abandon(pending.pk, "looked stuck")
        finally:
            connection.close()
        return Answer(200, success("5.00"))

    ath.answer_by(REFUND_PATH, marked_failed_meanwhile)
    made = refunds.refund(payment, "5.00")

    made.refresh_from_db()
    assert made.status == "completed"  # ATH says it was made
    assert len(refund_signals(signal_log)) == 1
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("5.00")


@pytest.mark.parametrize("asked_here", [True, False])
def test_two_copies_of_one_refund_at_once_make_one(ath, payment, signal_log, monkeypatch, asked_here):
    """The webhook and the report's row (two keys: the report dates it otherwise) of one refund, processed
    at once: the second waits for the payment's lock, then sees the first's refund."""
    if connection.vendor == "sqlite":
        pytest.skip("row locks: PostgreSQL and MariaDB (SQLite runs one writer at a time)")
    if asked_here:
        ath.answer(REFUND_PATH, 200, success("5.00", daily="12"))
        refunds.refund(payment, "5.00")
    webhook = parse(
        refund_webhook("5.00", REFUND_REFERENCE if asked_here else REFERENCE, dailyTransactionID="12")
    )
    row = replace(webhook, reference_number=REFERENCE, date=webhook.date + timedelta(seconds=3))
    assert row.idempotency_key != webhook.idempotency_key
    looked, committed = threading.Event(), threading.Event()
    same_refund = processor.same_refund

    def slow_same_refund(event: Any) -> Any:
        found = same_refund(event)
        if event is row and not looked.is_set():
            looked.set()  # the row has looked and found nothing; the webhook goes now and commits first
            assert committed.wait(10)
        return found

    monkeypatch.setattr(processor, "same_refund", slow_same_refund)

    def webhook_now() -> None:
        looked.wait(10)
        try:
            processor.process(webhook, raw_body="{}")
        finally:
            committed.set()
            connections.close_all()

    thread = threading.Thread(target=webhook_now)
    thread.start()
    processor.process(row, raw_body="{}")
    thread.join(20)

    assert Refund.objects.count() == 1
    assert len(refund_signals(signal_log)) == 1
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("5.00")


# --- what ATH's answer says otherwise -----------------------------------------------------------------


def test_an_answer_with_another_amount_records_ath_s_and_flags_it(ath, payment, signal_log):
    ath.answer(REFUND_PATH, 200, success("4.00"))

    made = refunds.refund(payment, "5.00")

    made.refresh_from_db()
    assert made.amount == Decimal("4.00")  # what moved at ATH Móvil
    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("4.00")
    assert [a["kind"] for a in payment.anomalies] == ["refund_amount_differs"]
    assert "5.00" in payment.anomalies[0]["detail"] and "4.00" in payment.anomalies[0]["detail"]
    assert len(refund_signals(signal_log)) == 1


def test_the_command_says_loudly_what_ath_answered_otherwise(ath, payment):
    ath.answer(REFUND_PATH, 200, success("4.00"))
    text = run(REFERENCE, "--amount", "5.00", "--yes")
    assert "refunded 4.00" in text
    assert "WARNING: ATH Móvil's answer is not what was asked: refund_amount_differs" in text


def test_a_refund_number_ath_gave_another_refund_is_flagged(ath, payment):
    ath.answer(REFUND_PATH, 200, success("5.00", daily="0009"))
    refunds.refund(payment, "5.00")
    ath.answer(REFUND_PATH, 200, success("6.00", daily="0010"))  # the same refund number again

    second = refunds.refund(payment, "6.00")

    assert [a["kind"] for a in second.flagged] == ["refund_number_reused"]
    payment.refresh_from_db()
    assert [a["kind"] for a in payment.anomalies] == ["refund_number_reused"]


def test_an_answer_naming_another_original_transaction_is_flagged(ath, payment, signal_log):
    answer = success("5.00")
    answer["data"]["originalTransaction"]["referenceNumber"] = "215070000-someone-else"
    ath.answer(REFUND_PATH, 200, answer)

    refunds.refund(payment, "5.00")

    payment.refresh_from_db()
    assert [a["kind"] for a in payment.anomalies] == ["refund_of_other_transaction"]
    assert "215070000-someone-else" in payment.anomalies[0]["detail"]


# --- a refund that certainly never happened --------------------------------------------------------------


def test_a_pending_refund_can_be_marked_failed_when_ath_shows_it_never_happened(ath, payment, monkeypatch):
    ath.answer(REFUND_PATH, 403, raw=b"<html>Forbidden</html>")  # ATH's firewall outside Puerto Rico
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "5.00")
    pending = Refund.objects.get()
    assert refunds.refundable(payment) == Decimal("21.00")
    Refund.objects.filter(pk=pending.pk).update(requested_at=timezone.now() - timedelta(minutes=5))

    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    with pytest.raises(CommandError, match="not confirmed"):
        run("--fail", str(pending.pk), "--reason", "ATH Business shows no refund")
    text = run("--fail", str(pending.pk), "--reason", "ATH Business shows no refund", "--yes")

    pending.refresh_from_db()
    assert pending.status == Refund.Status.FAILED and "ATH Business shows no refund" in pending.error
    assert f"refund {pending.pk}" in text and "failed" in text
    assert refunds.refundable(payment) == Decimal("26.00")
    with pytest.raises(CommandError, match="not pending"):
        run("--fail", str(pending.pk), "--yes")
    with pytest.raises(CommandError, match="no payment, --amount or --message"):
        run("--check", str(pending.pk), "--amount", "3")


# --- what a refund refuses to do -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount", ["1e2", "1e1000000", "\uff11\uff10", "٣", "+5", "5,00", " 5.00x", "NaN", "inf"]
)
def test_amounts_are_plain_dollars_and_cents(amount):
    with pytest.raises(ValueError, match="amount"):
        refunds.parse_amount(amount)


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("5", "5.00"),
        ("10.", "10.00"),
        (".5", "0.50"),
        ("5.5", "5.50"),
        (" 12.34 ", "12.34"),
        (Decimal("3"), "3.00"),
    ],
)
def test_amounts_that_are_dollars_and_cents(text, amount):
    assert refunds.parse_amount(text) == Decimal(amount)


def test_inside_a_transaction_nothing_is_sent_or_written(ath, payment):
    """The pending refund must be committed before ATH is asked: inside the caller's transaction a rollback
    would lose it after money moved."""
    from django.db import transaction

    with transaction.atomic(), pytest.raises(refunds.RefundError, match="outside a transaction"):
        refunds.refund(payment, "5.00")
    assert ath.requests == [] and not Refund.objects.exists()


def test_the_private_token_is_not_in_django_s_error_report(ath, payment, monkeypatch):
    import sys

    from django.views.debug import ExceptionReporter

    def database_gone(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(processor, "request_refund", database_gone)
    try:
        refunds.refund(payment, "5.00")
    except RuntimeError:
        report = ExceptionReporter(None, *sys.exc_info())
        assert PRIVATE not in report.get_traceback_text()
        assert PRIVATE not in report.get_traceback_html()
    else:
        pytest.fail("the refund went on without its database")


# --- athm refund -----------------------------------------------------------------------------------------


def test_the_command_asks_for_confirmation_showing_the_refundable_amount(ath, payment, monkeypatch):
    ath.answer(REFUND_PATH, 200, success("26.00"))
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "n")

    out = io.StringIO()
    with pytest.raises(CommandError, match="not confirmed: nothing was sent"):
        call_command("refund", REFERENCE, stdout=out)

    assert "refundable 26.00" in out.getvalue()
    assert asked == ["Refund 26.00 (all still refundable) through ATH Móvil? [y/N] "]
    assert ath.requests == [] and not Refund.objects.exists()

    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    text = run(str(payment.pk), "--message", "Sorry")
    assert f"refunded 26.00 of payment {payment.pk}" in text and REFUND_REFERENCE in text
    assert ath.requests_to(REFUND_PATH)[0].json["message"] == "Sorry"


def test_the_command_with_yes_and_an_amount(ath, payment):
    ath.answer(REFUND_PATH, 200, success("4.50"))
    text = run(REFERENCE, "--amount", "4.50", "--yes")
    assert "refunded 4.50" in text
    with pytest.raises(CommandError, match=r"more than the 21\.50 still refundable"):
        run(REFERENCE, "--amount", "22", "--yes")
    with pytest.raises(CommandError, match="no payment has the id or reference number"):
        run("nope", "--yes")
    assert len(ath.requests_to(REFUND_PATH)) == 1


def test_the_command_says_what_ath_refused(ath, payment):
    ath.answer(REFUND_PATH, 400, {"status": "error", "message": "Message too long", "errorcode": "BTRA_0040"})
    with pytest.raises(
        CommandError, match=r"not refunded: ATH Móvil refused the refund: .*BTRA_0040.*failed"
    ):
        run(REFERENCE, "--yes")


# --- two requests at once --------------------------------------------------------------------------------


def test_two_refunds_at_once_for_the_last_amount_make_one(ath, payment, signal_log):
    if connection.vendor == "sqlite":
        pytest.skip("row locks: PostgreSQL and MariaDB (SQLite runs one writer at a time)")
    Payment.objects.filter(pk=payment.pk).update(total_refunded_amount=Decimal("20.00"))
    ath.answer(REFUND_PATH, 200, success("6.00"), delay=0.5)  # the first holds no lock while ATH answers
    results: list[str] = []
    start = threading.Barrier(2)

    def one() -> None:
        try:
            start.wait()
            results.append(run(REFERENCE, "--amount", "6.00", "--yes"))
        except CommandError as exc:
            results.append(f"error: {exc}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(results) == 2
    made = [r for r in results if not r.startswith("error")]
    assert len(made) == 1 and "refunded 6.00" in made[0]
    refused = [r for r in results if r.startswith("error")]
    # Refused while the first waits for ATH's answer, or for what is left once it is made.
    assert len(refused) == 1
    assert "is still pending" in refused[0] or "still refundable" in refused[0]
    assert len(ath.requests_to(REFUND_PATH)) == 1
    [refund] = Refund.objects.all()
    assert refund.status == "completed"
    assert len(refund_signals(signal_log)) == 1
