"""ATH Móvil's later deliveries of a refund asked for here, each matched to that refund and never to another
(a second review's cases): a report row of a recorded refund without a daily id never settles another
pending one; a copy naming the refund's other number is the same refund; ATH's answer is folded into the
refund its delivery recorded first (unlinked or linked), once, and never into another day's refund of the
same daily id; with verification on, a forged copy changes nothing; ``--check`` looks before midnight;
``reconcile --dry-run`` says what the real run does. Against the fake ATH Móvil on 127.0.0.1, with the
fixtures of tests/test_refunds.py."""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from athm_core import processor, refunds
from athm_core.models import Notice, OutboxMessage, Refund
from athm_core.payloads import PUERTO_RICO
from tests.fake_athm import Answer, fake_athm_fixture  # noqa: F401
from tests.test_refunds import (  # noqa: F401
    REFERENCE,
    REFUND_PATH,
    REFUND_REFERENCE,
    REPORT_PATH,
    ath_fixture,
    payment_fixture,
    refund_signals,
    refund_webhook,
    report_refund,
    run,
    success,
    webhook_before_answer,
)


def pr(dt) -> str:
    """A date as ATH Móvil writes it: Puerto Rico time, no zone."""
    return dt.astimezone(PUERTO_RICO).strftime("%Y-%m-%d %H:%M:%S")


# --- a copy (report row without daily id) of refund A, already recorded, settles pending B ----------


@pytest.mark.parametrize("how", ["check", "reconcile"])
def test_report_row_of_a_recorded_refund_does_not_settle_another_pending_one(
    ath, payment, signal_log, lambda_handler, how
):
    # A: 5.00, answered, its webhook (daily 9) claimed it.
    ath.answer(REFUND_PATH, 200, success("5.00", daily="0009"))
    a = refunds.refund(payment, "5.00")
    a_date = timezone.now() - timedelta(seconds=30)
    lambda_handler.post(refund_webhook("5.00", dailyTransactionID="9", date=pr(a_date)))
    # B: 5.00 again, ATH does not answer (it never reached ATH, say).
    ath.answer(REFUND_PATH, close=True)
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "5.00")
    b = Refund.objects.get(status="pending")
    # The report lists A only, without a daily id, dated a second off from its webhook.
    row = report_refund("5.00", daily=None)
    row["date"] = pr(a_date + timedelta(seconds=1))
    ath.answer(REPORT_PATH, 200, [row])

    if how == "check":
        refunds.check(b.pk)
    else:
        call_command("reconcile", stdout=io.StringIO())

    b.refresh_from_db()
    payment.refresh_from_db()
    assert b.status == "pending", "A's row settled B"
    assert payment.total_refunded_amount == Decimal("5.00")
    assert [s["refund"].pk for s in refund_signals(signal_log)] == [a.pk]


# --- fold: the answer's daily id is unique only per day ---------------------------------------------


def test_the_answer_does_not_fold_into_yesterdays_refund_with_the_same_daily_id(
    ath, payment, signal_log, lambda_handler
):
    # Yesterday an app refund of 5.00 (daily id 9 of that day); its webhook arrives late, just now
    # (or `athm reconcile` of yesterday records it now).
    yesterday = timezone.now() - timedelta(days=1)
    lambda_handler.post(refund_webhook("5.00", dailyTransactionID="9", date=pr(yesterday)))
    app = Refund.objects.get()
    assert app.payment_id == payment.pk

    # Today a refund of 5.00 asked for here; ATH's answer: today's daily id 9.
    ath.answer(REFUND_PATH, 200, success("5.00", daily="0009"))
    made = refunds.refund(payment, "5.00")

    payment.refresh_from_db()
    assert made.pk != app.pk, "our refund was folded into yesterday's app refund"
    assert Refund.objects.count() == 2
    assert payment.total_refunded_amount == Decimal("10.00")
    assert len(refund_signals(signal_log)) == 2
    assert OutboxMessage.objects.filter(event_type="refund_sent").count() == 2


# --- reconcile --dry-run ---------------------------------------------------------------------------


def test_dry_run_does_not_report_an_answered_refund_as_missing(ath, payment):
    ath.answer(REFUND_PATH, 200, success("5.00", daily="0012"))
    refunds.refund(payment, "5.00")
    ath.answer(REPORT_PATH, 200, [report_refund("5.00", daily=12)])

    out = io.StringIO()
    call_command("reconcile", "--dry-run", stdout=out)
    dry = out.getvalue()
    out = io.StringIO()
    call_command("reconcile", stdout=out)
    real = out.getvalue()
    print(real)
    assert "would create" not in dry or "would create 0" in dry
    assert "already present 1" in real


# --- fold path with redeliveries and the report afterwards ------------------------------------------


def test_fold_unlinked_then_redeliveries_and_report(ath, payment, signal_log, lambda_handler):
    """Webhook naming the refund's own number, dated 20 minutes before our request (ATH's clock), recorded
    unlinked; the answer folds it; then redelivery, a copy naming the payment's number, the report."""
    early = timezone.now() - timedelta(minutes=20)
    body = refund_webhook("5.00", REFUND_REFERENCE, dailyTransactionID="9", date=pr(early))

    webhook_before_answer(ath, body, success("5.00", daily="0009"))
    made = refunds.refund(payment, "5.00")
    lambda_handler.post(body)
    lambda_handler.post(refund_webhook("5.00", REFERENCE, dailyTransactionID="9", date=pr(early)))
    row = report_refund("5.00", daily=9)
    row["date"] = pr(early + timedelta(seconds=2))
    ath.answer(REPORT_PATH, 200, [row])
    call_command("reconcile", stdout=io.StringIO())
    processor.link_waiting_refunds()

    payment.refresh_from_db()
    assert Refund.objects.count() == 1, list(Refund.objects.values())
    assert payment.total_refunded_amount == Decimal("5.00")
    assert [s["refund"].pk for s in refund_signals(signal_log)] == [made.pk]
    assert OutboxMessage.objects.filter(event_type="refund_sent").count() == 1
    assert Notice.objects.count() == 1


# --- verification on ---------------------------------------------------------------------------------


@pytest.fixture
def verifying(ath, settings):
    from athm_core.ath import verification

    verification._report_cache.clear()
    settings.ATHM_VERIFY = True
    yield ath
    verification._report_cache.clear()


def test_verified_webhook_settles_unanswered_refund(verifying, payment, signal_log, lambda_handler):
    verifying.answer(REFUND_PATH, close=True)
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "5.00")
    verifying.answer(REPORT_PATH, 200, [report_refund("5.00", daily=9)])
    assert lambda_handler.post(refund_webhook("5.00", dailyTransactionID="9")).status == 200
    assert lambda_handler.post(refund_webhook("5.00", dailyTransactionID="9")).status == 200
    [refund] = Refund.objects.all()
    assert refund.status == "completed"
    assert len(refund_signals(signal_log)) == 1


def test_a_forged_copy_of_an_answered_refund_changes_nothing(verifying, payment, signal_log, lambda_handler):
    """A body with the answered refund's reference, amount and daily id (small integers) but another time
    of day and another customer: taken for a copy of it (ATH is not asked), it changes nothing, the
    customer's details included."""
    verifying.answer(REFUND_PATH, 200, success("5.00", daily="0009"))
    made = refunds.refund(payment, "5.00")
    verifying.answer(REPORT_PATH, 200, [])  # ATH lists nothing of the kind
    forged = refund_webhook(
        "5.00", dailyTransactionID="9", name="Mallory", phoneNumber="7870000000", email="m@evil.example"
    )
    lambda_handler.post(forged)
    made.refresh_from_db()
    assert (made.name, made.phone_number, made.email) == ("", "", "")
    assert made.refund_reference_number == REFUND_REFERENCE


# --- an unanswered refund settled under one number; its copy under the other ---------------------------


@pytest.mark.parametrize("second_pending", [False, True])
def test_copy_naming_the_refunds_own_number_after_check_settled_it(
    ath, payment, signal_log, lambda_handler, second_pending
):
    ath.answer(REFUND_PATH, close=True)
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "5.00")
    a = Refund.objects.get()
    # --check: the report's row names the payment's number, daily id 9.
    ath.answer(REPORT_PATH, 200, [report_refund("5.00", daily=9)])
    assert refunds.check(a.pk).status == "completed"
    if second_pending:
        # A second refund of 5.00, asked for minutes later; ATH does not answer (never reached it).
        with pytest.raises(refunds.RefundPending):
            refunds.refund(payment, "5.00")
    # A's webhook arrives late, naming the refund's own number (ATH's webhook may name either).
    lambda_handler.post(refund_webhook("5.00", REFUND_REFERENCE, dailyTransactionID="9"))

    payment.refresh_from_db()
    assert payment.total_refunded_amount == Decimal("5.00")
    assert [s["refund"].pk for s in refund_signals(signal_log)] == [a.pk]
    assert not Refund.objects.filter(payment__isnull=True).exists(), "A's copy kept as a refund of its own"
    assert Refund.objects.filter(status="completed").count() == 1


def test_linked_fold_outbox_once(ath, payment, signal_log, lambda_handler):
    body = refund_webhook("4.00", dailyTransactionID="9")

    webhook_before_answer(ath, body, success("4.00", daily="0009"))
    made = refunds.refund(payment, "5.00")
    lambda_handler.post(body)
    ath.answer(REPORT_PATH, 200, [report_refund("4.00", daily=9)])
    call_command("reconcile", stdout=io.StringIO())
    payment.refresh_from_db()
    assert Refund.objects.count() == 1
    assert payment.total_refunded_amount == Decimal("4.00")
    assert [s["refund"].pk for s in refund_signals(signal_log)] == [made.pk]
    assert OutboxMessage.objects.filter(event_type="refund_sent").count() == 1


def test_check_looks_before_midnight_for_a_refund_asked_just_after(ath, payment, signal_log):
    ath.answer(REFUND_PATH, close=True)
    with pytest.raises(refunds.RefundPending):
        refunds.refund(payment, "5.00")
    pending = Refund.objects.get()
    today = timezone.now().astimezone(PUERTO_RICO).replace(hour=0, minute=3, second=0, microsecond=0)
    Refund.objects.filter(pk=pending.pk).update(requested_at=today)
    row = report_refund("5.00", daily=9)
    row["date"] = pr(today - timedelta(minutes=5))  # ATH's clock 5 minutes behind: within ASKED_BEFORE
    ath.answer(REPORT_PATH, 200, [row])
    refunds.check(pending.pk)
    asked = ath.requests_to(REPORT_PATH)[-1].json
    assert asked["fromDate"] <= row["date"]
