"""With the private token, ATH Móvil's transaction report confirms what findPayment cannot: app payments,
donations and refunds. A confirmed event wins over an unconfirmed payment that holds its reference number
(the squatter is flagged ``reference_conflict``). Against the fake ATH Móvil on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from athm_core import replay
from athm_core.ath.client import FIND_PAYMENT_PATH, REPORT_PATH
from athm_core.models import Payment, Refund, WebhookEvent
from tests.conftest import sample_data
from tests.fake_athm import fake_athm_fixture  # noqa: F401
from tests.test_verification import ath_says

APP_PAYMENT = sample_data("payment_received")
DONATION = sample_data("donation_received")
COMPLETED = sample_data("ecommerce_completed.production")
REFUND = {
    **sample_data("refund_sent.production"),
    "referenceNumber": COMPLETED["referenceNumber"],
    "total": "6.00",
}


@pytest.fixture(name="ath")
def ath_fixture(fake_athm, settings):
    settings.ATHM_VERIFY = True
    settings.ATHM_PUBLIC_TOKEN = "pk_test_0123456789"
    settings.ATHM_PRIVATE_TOKEN = "sk_test_private"
    settings.ATHM_VERIFY_TIMEOUT = 0.5
    return fake_athm


def report_lists(ath, *rows) -> None:
    ath.answer(REPORT_PATH, 200, list(rows))


def post(lambda_handler, data):
    return lambda_handler.post(json.dumps(data))


@pytest.mark.parametrize("data", [APP_PAYMENT, DONATION], ids=["app payment", "donation"])
def test_an_app_payment_or_donation_the_report_lists_is_applied_and_marked_confirmed(
    lambda_handler, ath, signal_log, data
):
    report_lists(ath, data)
    assert post(lambda_handler, data).json()["outcome"] == "applied"
    assert Payment.objects.get().verified_at is not None
    [request] = ath.requests_to(REPORT_PATH)
    assert request.json["privateToken"] == "sk_test_private"


def test_a_forged_amount_is_rejected_and_one_not_listed_yet_waits(lambda_handler, ath, signal_log):
    report_lists(ath, {**APP_PAYMENT, "total": "1.00"})
    assert post(lambda_handler, APP_PAYMENT).json()["outcome"] == "rejected"
    report_lists(ath)
    other = {**APP_PAYMENT, "referenceNumber": "215070-not-yet"}
    assert post(lambda_handler, other).json()["error"] == "verification_pending"
    assert not Payment.objects.exists() and signal_log.names() == []
    report_lists(ath, other)
    assert replay.finish_pending(retry_now=True).verification["settled"] == {"applied": 1}
    assert signal_log.names() == ["payment_received"]


def test_a_refund_is_confirmed_by_its_reference_and_amount(lambda_handler, ath, signal_log):
    ath_says(ath)
    post(lambda_handler, COMPLETED)
    # The report lists the payment and two partial refunds under the same reference number.
    report_lists(ath, COMPLETED, {**REFUND, "total": "4.00"}, REFUND)
    assert post(lambda_handler, REFUND).json()["outcome"] == "applied"
    assert Refund.objects.get().amount == 6
    # A refund of an amount the report does not list waits for it (the report may lag), never applied.
    forged = {**REFUND, "total": "20.00", "dailyTransactionID": "99"}
    assert post(lambda_handler, forged).json()["error"] == "verification_pending"
    assert signal_log.names() == ["payment_completed", "refund_sent"]


def test_one_report_call_serves_a_burst_of_one_days_deliveries(lambda_handler, ath):
    second = {**APP_PAYMENT, "referenceNumber": "215070-second"}
    report_lists(ath, APP_PAYMENT, second, DONATION)
    for data in (APP_PAYMENT, second):
        assert post(lambda_handler, data).json()["outcome"] == "applied"
    assert len(ath.requests_to(REPORT_PATH)) == 1


def test_without_the_private_token_they_are_applied_unverified_as_before(lambda_handler, ath, settings):
    settings.ATHM_PRIVATE_TOKEN = ""
    assert post(lambda_handler, APP_PAYMENT).json()["outcome"] == "applied"
    assert Payment.objects.get().verified_at is None and ath.requests == []


def test_a_confirmed_checkout_takes_its_reference_number_from_an_unconfirmed_squatter(
    lambda_handler, ath, settings, signal_log
):
    # A forged app payment names the checkout's reference number first, while nothing could confirm it.
    settings.ATHM_PRIVATE_TOKEN = ""
    squat = {**APP_PAYMENT, "referenceNumber": COMPLETED["referenceNumber"], "total": "1.00"}
    assert post(lambda_handler, squat).json()["outcome"] == "applied"
    # ATH's genuine, verified completion still gets its payment, and the squatter is flagged.
    ath_says(ath)
    response = post(lambda_handler, COMPLETED)
    assert response.status == 200 and response.json()["outcome"] == "applied", response
    assert response.json()["anomalies"] == ["reference_conflict"]
    genuine = Payment.objects.get(ecommerce_id=COMPLETED["ecommerceId"])
    assert genuine.reference_number == COMPLETED["referenceNumber"] and genuine.verified_at is not None
    squatter = Payment.objects.get(transaction_type="payment")
    assert squatter.reference_number is None and [a["kind"] for a in squatter.anomalies] == [
        "reference_conflict"
    ]
    assert signal_log.names() == ["payment_received", "payment_completed"]
    assert WebhookEvent.objects.filter(outcome="rejected").count() == 0


def test_a_confirmed_payment_is_never_evicted(lambda_handler, ath, signal_log):
    report_lists(ath, APP_PAYMENT)
    assert post(lambda_handler, APP_PAYMENT).json()["outcome"] == "applied"
    clash = {**COMPLETED, "referenceNumber": APP_PAYMENT["referenceNumber"]}
    ath_says(ath, reference=APP_PAYMENT["referenceNumber"])
    assert post(lambda_handler, clash).json()["outcome"] == "rejected"
    assert Payment.objects.get().reference_number == APP_PAYMENT["referenceNumber"]


def test_a_second_partial_refund_is_not_taken_for_the_first(lambda_handler, ath, signal_log):
    ath_says(ath)
    post(lambda_handler, COMPLETED)
    first = {**REFUND, "total": "4.00", "dailyTransactionID": "1"}
    report_lists(ath, COMPLETED, first)
    assert post(lambda_handler, first).json()["outcome"] == "applied"
    # The report, asked again within the cache's minute, now lists the second refund too.
    second = {**REFUND, "dailyTransactionID": "2"}
    report_lists(ath, COMPLETED, first, second)
    assert post(lambda_handler, second).json()["outcome"] == "applied"
    assert signal_log.names() == ["payment_completed", "refund_sent", "refund_sent"]


# --- a reference number ATH never lists: bounded, and never applied by the deadline ---------------------


def waited(**delta) -> None:
    """As if every kept delivery had been received ``delta`` earlier, and were due for the relay now."""
    WebhookEvent.objects.update(
        received_at=F("received_at") - timedelta(**delta),
        not_confirmed_at=F("not_confirmed_at") - timedelta(**delta),
        verify_after=timezone.now() - timedelta(seconds=1),
    )


def test_a_made_up_reference_number_waits_two_days_at_most_then_is_kept_unverified(
    lambda_handler, ath, signal_log, capsys
):
    from tests.test_anomalies import relay_metrics

    report_lists(ath)
    forged = {**APP_PAYMENT, "referenceNumber": "215070-made-up"}
    assert post(lambda_handler, forged).json()["error"] == "verification_pending"
    assert replay.finish_pending(retry_now=True).verification["still_pending"] == 1
    waited(days=2, minutes=1)
    assert "WebhookUnverifiablePayment" in relay_metrics(capsys)
    pending = WebhookEvent.objects.get(outcome="pending")
    kept = pending.settled_by
    assert kept.outcome == "unverified" and "does not list reference number 215070-made-up" in kept.error
    assert not Payment.objects.exists() and signal_log.names() == []
    # Kept, not lost: once ATH lists it after all, reprocessing applies it.
    report_lists(ath, forged)
    [result] = replay.reprocess([kept])
    assert result.status == "applied" and signal_log.names() == ["payment_received"]


def test_the_apply_unverified_deadline_never_applies_what_ath_answers_it_does_not_list(
    lambda_handler, ath, settings, signal_log
):
    settings.ATHM_APPLY_UNVERIFIED_AFTER = 60
    report_lists(ath)
    assert post(lambda_handler, {**APP_PAYMENT, "referenceNumber": "215070-made-up"}).status == 503
    waited(minutes=5)
    verification = replay.finish_pending().verification
    assert (verification["applied_unverified"], verification["still_pending"]) == (0, 1)
    assert not Payment.objects.exists() and signal_log.names() == []


def test_a_relay_run_asks_for_a_days_report_once_however_many_deliveries_wait_on_it(lambda_handler, ath):
    report_lists(ath)
    for n in range(5):
        assert post(lambda_handler, {**APP_PAYMENT, "referenceNumber": f"215070-made-up-{n}"}).status == 503
    # Each delivery asks once more than its cached copy: a genuine one may have been listed since.
    assert len(ath.requests_to(REPORT_PATH)) <= 5
    before = len(ath.requests_to(REPORT_PATH))
    assert replay.finish_pending(retry_now=True).verification["still_pending"] == 5
    assert len(ath.requests_to(REPORT_PATH)) - before == 1


# --- squatting within one kind: an unconfirmed payment holding the reference number of a confirmed one ----


def unconfirmed(settings, lambda_handler, data) -> None:
    """``data`` applied while nothing could confirm it (no private token)."""
    token, settings.ATHM_PRIVATE_TOKEN = settings.ATHM_PRIVATE_TOKEN, ""
    assert post(lambda_handler, data).json()["outcome"] == "applied"
    settings.ATHM_PRIVATE_TOKEN = token


@pytest.mark.parametrize("data", [APP_PAYMENT, DONATION], ids=["app payment", "donation"])
def test_an_unconfirmed_payment_of_its_own_kind_is_corrected_from_the_report_row(
    lambda_handler, ath, settings, signal_log, data
):
    unconfirmed(settings, lambda_handler, {**data, "total": "1.00", "message": "forged"})
    report_lists(ath, data)
    response = post(lambda_handler, data)
    assert response.json()["outcome"] == "applied", response
    assert response.json()["anomalies"] == ["corrected_from_ath"]
    payment = Payment.objects.get()  # this transaction, rewritten: the ledger holds its total once
    assert str(payment.total) == data["total"] and payment.verified_at is not None
    assert payment.message == data["message"] and "total 1.00 → " in payment.anomalies[-1]["detail"]
    assert signal_log.names() == [data["transactionType"] + "_received"] * 2
    # ATH's later redeliveries are duplicates of the corrected payment.
    assert post(lambda_handler, data).json()["outcome"] == "duplicate"
    assert len(signal_log.names()) == 2


def test_an_unconfirmed_payment_that_ath_confirms_as_recorded_is_marked_confirmed_not_evicted(
    lambda_handler, ath, settings, signal_log
):
    unconfirmed(settings, lambda_handler, APP_PAYMENT)
    report_lists(ath, APP_PAYMENT)
    response = post(lambda_handler, APP_PAYMENT)
    assert response.json()["outcome"] == "duplicate" and response.json().get("anomalies", []) == []
    payment = Payment.objects.get()
    assert payment.verified_at is not None and payment.anomalies == []
    assert signal_log.names() == ["payment_received"]
    # Confirmed now: later redeliveries ask ATH nothing.
    calls = len(ath.requests_to(REPORT_PATH))
    assert post(lambda_handler, APP_PAYMENT).json()["outcome"] == "duplicate"
    assert len(ath.requests_to(REPORT_PATH)) == calls


def test_a_redelivery_of_an_unconfirmed_payment_asks_nothing_without_the_private_token(
    lambda_handler, ath, settings
):
    unconfirmed(settings, lambda_handler, APP_PAYMENT)
    settings.ATHM_PRIVATE_TOKEN = ""
    assert post(lambda_handler, APP_PAYMENT).json()["outcome"] == "duplicate" and ath.requests == []


def test_the_refunds_of_a_corrected_payment_stay_on_it(lambda_handler, ath, settings, signal_log):
    refund = {**REFUND, "referenceNumber": APP_PAYMENT["referenceNumber"], "total": "2.00"}
    unconfirmed(settings, lambda_handler, {**APP_PAYMENT, "total": "1.00"})
    unconfirmed(settings, lambda_handler, refund)
    assert Payment.objects.get().total_refunded_amount == 2  # flagged over_refund on the forged 1.00
    report_lists(ath, APP_PAYMENT)
    assert post(lambda_handler, APP_PAYMENT).json()["anomalies"] == ["corrected_from_ath"]
    payment = Payment.objects.get()
    assert Refund.objects.get().payment == payment and payment.total_refunded_amount == 2
    assert payment.refundable_amount == 6
    assert signal_log.names() == ["payment_received", "refund_sent", "payment_received"]


def test_the_refunds_of_a_squatter_of_another_kind_move_to_the_confirmed_payment(
    lambda_handler, ath, settings, signal_log
):
    squat = {**APP_PAYMENT, "referenceNumber": COMPLETED["referenceNumber"], "total": "1.00"}
    unconfirmed(settings, lambda_handler, squat)
    unconfirmed(settings, lambda_handler, {**REFUND, "total": "6.00"})
    ath_says(ath)
    assert post(lambda_handler, COMPLETED).json()["outcome"] == "applied"
    genuine = Payment.objects.get(ecommerce_id=COMPLETED["ecommerceId"])
    assert Refund.objects.get().payment == genuine and genuine.total_refunded_amount == 6
    squatter = Payment.objects.get(transaction_type="payment")
    assert squatter.total_refunded_amount == 0 and not squatter.refunds.exists()
    assert "1 refund(s) of 6.00 moved" in squatter.anomalies[-1]["detail"]
    # The receivers hear of the refund again, with the payment it belongs to.
    assert signal_log.names() == ["payment_received", "refund_sent", "payment_completed", "refund_sent"]
    assert signal_log.calls[-1][2]["payment"] == genuine


def test_a_completion_in_aths_published_shape_recorded_unconfirmed_is_corrected_too(
    lambda_handler, ath, settings, signal_log
):
    legacy = sample_data("ecommerce_completed.legacy")
    # Before verification was on, a forged completion in that shape named the reference with another total.
    settings.ATHM_VERIFY = False
    assert post(lambda_handler, {**legacy, "total": "1.00"}).json()["outcome"] == "applied"
    settings.ATHM_VERIFY = True
    report_lists(ath, legacy)
    response = post(lambda_handler, legacy)
    assert response.json()["outcome"] == "applied" and response.json()["anomalies"] == ["corrected_from_ath"]
    payment = Payment.objects.get()
    assert str(payment.total) == "12.50" and payment.verified_at is not None
    assert signal_log.names() == ["payment_completed", "payment_completed"]


def test_a_confirmed_checkout_joins_and_corrects_an_unconfirmed_one_with_another_total(
    lambda_handler, ath, settings, signal_log
):
    # A forged completion in ATH's published shape (no ecommerceId) names the checkout's reference number.
    settings.ATHM_VERIFY = False
    forged = {**sample_data("ecommerce_completed.legacy"), "referenceNumber": COMPLETED["referenceNumber"]}
    assert post(lambda_handler, {**forged, "total": "1.00"}).json()["outcome"] == "applied"
    settings.ATHM_VERIFY = True
    ath_says(ath)
    response = post(lambda_handler, COMPLETED)
    assert response.json()["outcome"] == "applied" and response.json()["anomalies"] == ["corrected_from_ath"]
    payment = Payment.objects.get()
    assert payment.ecommerce_id == COMPLETED["ecommerceId"] and str(payment.total) == "26.00"
    assert payment.verified_at is not None and payment.metadata_1 == COMPLETED["metadata1"]
    assert signal_log.names() == ["payment_completed", "payment_completed"]


def test_a_confirmed_checkout_is_joined_to_the_same_one_recorded_unconfirmed(
    lambda_handler, ath, settings, signal_log
):
    settings.ATHM_VERIFY = False
    # The same completion in ATH's published shape: no ecommerceId.
    legacy = {key: value for key, value in COMPLETED.items() if key != "ecommerceId"}
    assert post(lambda_handler, legacy).json()["outcome"] == "applied"
    settings.ATHM_VERIFY = True
    ath_says(ath)
    response = post(lambda_handler, COMPLETED)
    assert response.json()["outcome"] == "duplicate" and not response.json()["anomalies"], response
    payment = Payment.objects.get()
    assert payment.ecommerce_id == COMPLETED["ecommerceId"] and payment.verified_at is not None
    assert signal_log.names() == ["payment_completed"]


def test_once_ath_has_answered_without_confirming_the_deadline_never_applies_it(
    lambda_handler, ath, settings, signal_log
):
    """ATH says "not listed" (or "OPEN"), then cannot be reached: the deadline is for an ATH that never
    answered, so making ATH unreachable after the fact gains a forger nothing."""
    settings.ATHM_APPLY_UNVERIFIED_AFTER = 60
    report_lists(ath)
    made_up = {**APP_PAYMENT, "referenceNumber": "215070-made-up", "total": "999.00"}
    assert post(lambda_handler, made_up).status == 503
    ath_says(ath, "OPEN")
    assert post(lambda_handler, COMPLETED).status == 503
    waited(minutes=5)
    ath.answer(REPORT_PATH, 502, raw=b"Bad Gateway")
    ath.answer(FIND_PAYMENT_PATH, 503, raw=b"down")
    verification = replay.finish_pending().verification
    assert (verification["applied_unverified"], verification["still_pending"]) == (0, 2)
    # Nor does a relay that cannot ask ATH at all.
    settings.ATHM_VERIFY = False
    waited(minutes=5)
    assert replay.finish_pending().verification["applied_unverified"] == 0
    assert not Payment.objects.exists() and signal_log.names() == []


def test_the_deadline_still_applies_what_ath_never_answered_about(lambda_handler, ath, settings, signal_log):
    settings.ATHM_APPLY_UNVERIFIED_AFTER = 60
    ath.answer(REPORT_PATH, 502, raw=b"Bad Gateway")
    assert post(lambda_handler, APP_PAYMENT).status == 503
    waited(minutes=5)
    assert replay.finish_pending().verification["applied_unverified"] == 1
    assert signal_log.names() == ["payment_received"]


# --- the transaction report's row is the record, as findPayment's answer is --------------------------------

LEGACY = sample_data("ecommerce_completed.legacy")  # metadata1 order-2044, one item "Pastelillos"


@pytest.mark.parametrize(
    "forged, difference",
    [
        ({"metadata1": "order-9999"}, "metadata1 'order-9999', ATH 'order-2044'"),
        ({"metadata2": "otra-tienda"}, "metadata2 'otra-tienda', ATH 'tienda-ponce'"),
        ({"items": [{"name": "Big TV", "quantity": "1", "price": "11.25", "tax": "1.25"}]}, "the items"),
        ({"fee": "0.01"}, "fee 0.01, ATH 0.31"),
    ],
)
def test_a_completion_without_ecommerce_id_that_lies_about_the_order_is_rejected(
    lambda_handler, ath, signal_log, forged, difference
):
    report_lists(ath, LEGACY)
    response = post(lambda_handler, {**LEGACY, **forged})
    assert response.json()["outcome"] == "rejected", response
    error = WebhookEvent.objects.get().error
    assert error.startswith("ATH Móvil's transaction report differs: ") and difference in error, error
    assert not Payment.objects.exists() and signal_log.names() == []
    assert post(lambda_handler, LEGACY).json()["outcome"] == "applied"
    assert Payment.objects.get().metadata_1 == "order-2044" and signal_log.names() == ["payment_completed"]


def test_the_report_row_is_the_record_where_the_body_says_nothing_or_otherwise(lambda_handler, ath):
    report_lists(ath, {**APP_PAYMENT, "name": "Ana Colón", "message": "Almuerzo", "dailyTransactionID": 11})
    body = {**APP_PAYMENT, "name": "Someone Else", "message": "forged", "dailyTransactionID": "0099"}
    assert post(lambda_handler, body).json()["outcome"] == "applied"
    payment = Payment.objects.get()
    assert (payment.name, payment.message, payment.daily_transaction_id) == ("Ana Colón", "Almuerzo", 11)
    legacy = {key: value for key, value in LEGACY.items() if key not in ("metadata1", "metadata2", "items")}
    report_lists(ath, LEGACY)
    assert post(lambda_handler, legacy).json()["outcome"] == "applied"
    checkout = Payment.objects.get(reference_number=LEGACY["referenceNumber"])
    assert (checkout.metadata_1, checkout.metadata_2) == ("order-2044", "tienda-ponce")
    assert [item["name"] for item in checkout.items] == ["Pastelillos"]


def test_a_forged_copy_of_a_partial_refund_is_not_confirmed_by_the_genuine_row(
    lambda_handler, ath, signal_log
):
    ath_says(ath)
    post(lambda_handler, COMPLETED)
    genuine = {**REFUND, "dailyTransactionID": "3"}
    report_lists(ath, COMPLETED, genuine)
    assert post(lambda_handler, genuine).json()["outcome"] == "applied"
    # Another daily id, or none: not that row's refund (recorded already); it waits for a row of its own.
    for copy in (
        {**REFUND, "dailyTransactionID": "77", "date": "2026-11-21 11:00:00"},
        {key: value for key, value in genuine.items() if key != "dailyTransactionID"},
    ):
        assert post(lambda_handler, copy).json()["error"] == "verification_pending", copy
    # The same daily id under another date: that row's refund, recorded already.
    same_id = {**REFUND, "dailyTransactionID": "3", "date": "2026-11-21 11:00:00"}
    assert post(lambda_handler, same_id).json()["outcome"] == "duplicate"
    assert Payment.objects.get().total_refunded_amount == 6
    assert signal_log.names() == ["payment_completed", "refund_sent"]
    # Two genuine refunds of the same amount, each listed: both recorded.
    other = {**REFUND, "dailyTransactionID": "4", "date": "2026-11-21 12:00:00"}
    report_lists(ath, COMPLETED, genuine, other)
    assert post(lambda_handler, other).json()["outcome"] == "applied"
    assert Payment.objects.get().total_refunded_amount == 12


def test_an_unconfirmed_completion_with_a_forged_order_is_corrected_not_confirmed_by_the_genuine_one(
    lambda_handler, ath, settings, signal_log
):
    settings.ATHM_VERIFY = False
    forged = {**LEGACY, "referenceNumber": COMPLETED["referenceNumber"], "total": COMPLETED["total"]}
    assert post(lambda_handler, {**forged, "metadata1": "order-9999"}).json()["outcome"] == "applied"
    settings.ATHM_VERIFY = True
    ath_says(ath, metadata1="order-1002")
    response = post(lambda_handler, COMPLETED)
    assert response.json()["outcome"] == "applied" and response.json()["anomalies"] == ["corrected_from_ath"]
    payment = Payment.objects.get()
    assert payment.metadata_1 == "order-1002" and payment.verified_at is not None
    assert "metadata_1 'order-9999' → 'order-1002'" in payment.anomalies[-1]["detail"]
    assert signal_log.names() == ["payment_completed", "payment_completed"]


def test_a_forgery_kept_pending_is_rejected_when_the_genuine_event_got_there_first(
    lambda_handler, ath, signal_log
):
    ath.answer(FIND_PAYMENT_PATH, 502, raw=b"Bad Gateway")
    assert post(lambda_handler, {**COMPLETED, "total": "1.00", "metadata1": "order-9999"}).status == 503
    ath_says(ath)
    assert post(lambda_handler, COMPLETED).json()["outcome"] == "applied"
    assert replay.finish_pending(retry_now=True).verification["settled"] == {"rejected": 1}
    assert Payment.objects.get().anomalies == [] and signal_log.names() == ["payment_completed"]
    # A plain redelivery of the genuine event asks ATH nothing.
    calls = len(ath.requests_to(FIND_PAYMENT_PATH))
    assert post(lambda_handler, COMPLETED).json()["outcome"] == "duplicate"
    assert len(ath.requests_to(FIND_PAYMENT_PATH)) == calls


def test_a_confirmed_refund_is_recorded_as_its_row_dates_it_so_copies_are_one_refund(
    lambda_handler, ath, signal_log
):
    """A copy of a genuine refund under another date (the rest is on the customer's receipt) is confirmed by
    the same row, and recorded as that row dates it: the same refund, never a second one, whichever comes
    first and even when both are checked before either is recorded (two Lambda instances at once)."""
    from athm_core import processor
    from athm_core.ath import verification
    from athm_core.payloads import parse

    ath_says(ath)
    post(lambda_handler, COMPLETED)
    genuine = {**REFUND, "dailyTransactionID": "3"}
    copy = {**genuine, "date": "2026-11-21 11:00:00", "message": "forged"}
    report_lists(ath, COMPLETED, genuine)
    checked = [verification.check(parse(json.dumps(body).encode())) for body in (copy, genuine)]
    outcomes = [processor.process(event, raw_body="{}").outcome for event in checked]
    assert outcomes == ["applied", "duplicate"]
    refund = Refund.objects.get()
    assert refund.transaction_date.isoformat() == "2026-11-21T13:20:41+00:00", refund.transaction_date
    assert refund.message == REFUND["message"] and Payment.objects.get().total_refunded_amount == 6
    assert post(lambda_handler, genuine).json()["outcome"] == "duplicate"
    assert signal_log.names() == ["payment_completed", "refund_sent"]


def test_two_genuine_refunds_of_one_amount_each_take_their_own_row(lambda_handler, ath, signal_log):
    ath_says(ath)
    post(lambda_handler, COMPLETED)
    first = {key: value for key, value in REFUND.items() if key != "dailyTransactionID"}
    second = {**first, "date": "2026-11-21 15:00:00"}
    report_lists(ath, COMPLETED, first, second)  # rows without a daily id: told apart by their dates
    for body in (second, first):
        assert post(lambda_handler, body).json()["outcome"] == "applied"
    assert Payment.objects.get().total_refunded_amount == 12


def test_an_unconfirmed_checkout_payment_is_rewritten_from_aths_answer_when_its_event_is_confirmed(
    lambda_handler, ath, settings, signal_log
):
    """A forgery applied by the deadline (or before verification was on) under the genuine ecommerceId:
    ATH's genuine webhook, confirmed, rewrites the payment from ATH's answer and announces it."""
    from tests.test_verification import ath_answers_fully

    settings.ATHM_APPLY_UNVERIFIED_AFTER = 60
    ath.answer(FIND_PAYMENT_PATH, 502, raw=b"Bad Gateway")
    assert post(lambda_handler, {**COMPLETED, "total": "1.00", "metadata1": "order-9999"}).status == 503
    waited(minutes=5)
    assert replay.finish_pending().verification["applied_unverified"] == 1
    ath_answers_fully(ath)
    response = post(lambda_handler, COMPLETED)
    assert response.json()["outcome"] == "applied", response
    assert response.json()["anomalies"] == ["corrected_from_ath"]
    payment = Payment.objects.get()
    assert (str(payment.total), payment.metadata_1) == ("26.00", "order-1002") and payment.verified_at
    assert "total 1.00 → 26.00" in payment.anomalies[-1]["detail"]
    assert signal_log.names() == ["payment_completed", "payment_completed"]
    assert post(lambda_handler, COMPLETED).json()["outcome"] == "duplicate"


def test_an_unconfirmed_checkout_payment_ath_confirms_as_recorded_is_marked_confirmed(
    lambda_handler, ath, settings, signal_log
):
    settings.ATHM_VERIFY = False
    assert post(lambda_handler, COMPLETED).json()["outcome"] == "applied"
    settings.ATHM_VERIFY = True
    ath_says(ath, metadata1=COMPLETED["metadata1"])
    assert post(lambda_handler, COMPLETED).json()["outcome"] == "duplicate"
    assert Payment.objects.get().verified_at is not None and signal_log.names() == ["payment_completed"]
    calls = len(ath.requests_to(FIND_PAYMENT_PATH))
    assert post(lambda_handler, COMPLETED).json()["outcome"] == "duplicate"
    assert len(ath.requests_to(FIND_PAYMENT_PATH)) == calls


def test_an_unconfirmed_body_that_contradicts_a_confirmed_payment_is_rejected_not_flagged_on_it(
    lambda_handler, ath, settings, signal_log
):
    settings.ATHM_PRIVATE_TOKEN = ""
    squat = {**APP_PAYMENT, "referenceNumber": COMPLETED["referenceNumber"], "total": "1.00"}
    assert post(lambda_handler, squat).json()["outcome"] == "applied"
    ath_says(ath)
    assert post(lambda_handler, COMPLETED).json()["anomalies"] == ["reference_conflict"]
    # The squatter's body again (nothing can confirm an app payment without the private token).
    response = post(lambda_handler, squat)
    assert response.json()["outcome"] == "rejected", response
    assert "ATH Móvil confirmed" in WebhookEvent.objects.order_by("pk").last().error
    genuine = Payment.objects.get(ecommerce_id=COMPLETED["ecommerceId"])
    assert [a["kind"] for a in genuine.anomalies] == ["reference_conflict"]
    assert signal_log.names() == ["payment_received", "payment_completed"]


def test_a_body_forging_the_order_of_a_confirmed_payment_is_rejected_not_a_duplicate(lambda_handler, ath):
    ath_says(ath, metadata1="order-1002")
    assert post(lambda_handler, COMPLETED).json()["outcome"] == "applied"
    assert post(lambda_handler, {**COMPLETED, "metadata1": "order-9999"}).json()["outcome"] == "rejected"
    assert Payment.objects.get().metadata_1 == "order-1002"
