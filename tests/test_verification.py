"""Verification with ATH Móvil's findPayment (a fake ATH server on 127.0.0.1): only what ATH confirms changes
a payment; what it contradicts is kept as ``rejected``; when it cannot answer, nothing is applied (503)."""

import json
import socket
import subprocess
import sys
import time

import pytest

from athm_core.ath.client import FIND_PAYMENT_PATH
from athm_core.models import OutboxMessage, Payment, Refund, WebhookEvent
from tests.conftest import ROOT, sample_data
from tests.fake_athm import fake_athm_fixture  # noqa: F401

COMPLETED = sample_data("ecommerce_completed.production")
PUBLIC_TOKEN = "pk_test_0123456789"


@pytest.fixture(name="ath")
def ath_fixture(fake_athm, settings):
    settings.ATHM_VERIFY = True
    settings.ATHM_PUBLIC_TOKEN = PUBLIC_TOKEN
    settings.ATHM_VERIFY_TIMEOUT = 0.5
    settings.ATHM_OUTBOX = True
    settings.ATHM_SNS_TOPIC_ARN = ""
    return fake_athm


def ath_says(
    fake, status="COMPLETED", *, total=COMPLETED["total"], reference=COMPLETED["referenceNumber"], **more
):
    data = {"ecommerceStatus": status, "referenceNumber": reference, "total": total, "fee": 0.6, **more}
    fake.answer(FIND_PAYMENT_PATH, 200, {"status": "success", "data": data})


def nothing_changed() -> bool:
    return not (Payment.objects.exists() or Refund.objects.exists() or OutboxMessage.objects.exists())


def test_an_event_ath_confirms_is_applied(lambda_handler, ath, signal_log):
    ath_says(ath)
    response = lambda_handler.post(json.dumps(COMPLETED))
    assert response.status == 200 and response.json()["outcome"] == "applied"
    [request] = ath.requests_to(FIND_PAYMENT_PATH)
    assert request.method == "POST"
    assert request.json == {"ecommerceId": COMPLETED["ecommerceId"], "publicToken": PUBLIC_TOKEN}
    assert Payment.objects.get().status == Payment.Status.COMPLETED
    assert signal_log.names() == ["payment_completed"]
    # A redelivery changes nothing, so ATH is not asked again.
    assert lambda_handler.post(json.dumps(COMPLETED)).json()["outcome"] == "duplicate"
    assert len(ath.requests_to(FIND_PAYMENT_PATH)) == 1


@pytest.mark.parametrize(
    "says, why",
    [
        ({"status": "CANCEL"}, "ATH Móvil reports the payment as CANCEL, not COMPLETED"),
        ({"total": "2.60"}, "ATH Móvil's findPayment answer differs: total 26.00, ATH 2.60"),
        ({"total": 260}, "ATH Móvil's findPayment answer differs: total 26.00, ATH 260.00"),
        ({"reference": "215070999-another"}, "ATH Móvil's findPayment answer differs: the reference number"),
        # Numbers no webhook total can be: still ATH's answer, and it differs.
        ({"total": 26.004}, "ATH Móvil's findPayment answer differs: total 26.00, ATH 26.004"),
        ({"total": "-26.00"}, "ATH Móvil's findPayment answer differs: total 26.00, ATH -26.00"),
    ],
    ids=[
        "cancelled",
        "another-total",
        "another-integer-total",
        "another-reference",
        "sub-cent-total",
        "negative-total",
    ],
)
def test_an_event_ath_contradicts_is_rejected_and_changes_nothing(lambda_handler, ath, signal_log, says, why):
    ath_says(ath, **says)
    response = lambda_handler.post(json.dumps(COMPLETED))
    # Answered 200 so that nobody retries it, without saying what ATH reported.
    assert response.status == 200
    answer = response.json()
    assert answer["accepted"] is False and answer["outcome"] == "rejected"
    assert answer["detail"] == "ATH Móvil does not confirm this event"
    assert nothing_changed() and signal_log.calls == []
    record = WebhookEvent.objects.get()
    assert (record.outcome, record.error) == ("rejected", why)
    assert record.raw_body == json.dumps(COMPLETED) and record.payment is None


UNKNOWN = {"status": "error", "message": "ecommerceId does not exist", "errorcode": "BTRA_0031", "data": None}


@pytest.mark.parametrize("status", [400, 404, 200])
def test_an_ecommerce_id_ath_does_not_know_is_rejected(lambda_handler, ath, status):
    ath.answer(FIND_PAYMENT_PATH, status, UNKNOWN)
    response = lambda_handler.post(json.dumps(COMPLETED))
    assert response.status == 200 and response.json()["outcome"] == "rejected"
    assert WebhookEvent.objects.get().error == "ATH Móvil knows no payment with this ecommerceId (BTRA_0031)"
    assert nothing_changed()


@pytest.mark.parametrize(
    "status, body",
    [
        (404, None),  # a proxy's HTML page, a wrong ATHM_PAYMENTS_API_BASE_URL
        (404, {"status": "error", "message": "not found"}),
        *((200, {"status": "success", "data": data}) for data in (None, {}, [], "", 0, False)),
    ],
    ids=["404-html", "404-json", "data-null", "data-empty", "data-list", "data-text", "data-0", "data-false"],
)
def test_answers_that_do_not_name_the_payment_keep_it_pending_not_rejected(
    lambda_handler, ath, signal_log, status, body
):
    if body is None:
        ath.answer(FIND_PAYMENT_PATH, status, raw=b"<html><body>Not Found</body></html>")
    else:
        ath.answer(FIND_PAYMENT_PATH, status, body)
    response = lambda_handler.post(json.dumps(COMPLETED))
    assert response.status == 503 and response.json()["error"] == "verification_pending", response
    assert nothing_changed()
    # Once ATH answers, the relay applies it.
    ath_says(ath)
    from athm_core import replay

    assert replay.finish_pending(retry_now=True).verification["settled"] == {"applied": 1}
    assert signal_log.names() == ["payment_completed"]


@pytest.mark.parametrize(
    "name, ath_status, outcome",
    [
        ("ecommerce_cancelled.production", "CANCEL", "applied"),
        ("ecommerce_expired", "CANCEL", "applied"),  # ATH reports expired checkouts as CANCEL
        ("ecommerce_cancelled.production", "COMPLETED", "rejected"),
        ("ecommerce_expired", "COMPLETED", "rejected"),
    ],
)
def test_cancels_and_expiries_need_ath_to_say_cancel(lambda_handler, ath, name, ath_status, outcome):
    ath_says(ath, ath_status, reference=None)
    response = lambda_handler.post(json.dumps(sample_data(name)))
    assert response.status == 200 and response.json()["outcome"] == outcome
    assert Payment.objects.filter(status__in=["cancelled", "expired"]).exists() == (outcome == "applied")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    "trouble",
    [
        "slow",
        "down",
        "not-json",
        "no-status",
        "unreadable-total",
        "server-error",
        "refused-token",
        "still-open",
    ],
)
def test_when_ath_cannot_say_nothing_is_applied_it_is_kept_pending_and_a_redelivery_finishes_later(
    lambda_handler, ath, settings, trouble
):
    body = json.dumps(COMPLETED)
    if trouble == "slow":
        ath.answer(FIND_PAYMENT_PATH, 200, {"status": "success", "data": {}}, delay=3)
    elif trouble == "down":
        settings.ATHM_PAYMENTS_API_BASE_URL = f"http://127.0.0.1:{closed_port()}"
    elif trouble == "not-json":
        ath.answer(FIND_PAYMENT_PATH, 200, raw=b"<html>maintenance</html>")
    elif trouble == "no-status":
        ath.answer(FIND_PAYMENT_PATH, 200, {"status": "success", "data": {"total": 26}})
    elif trouble == "unreadable-total":
        ath_says(ath, total="twenty-six")
    elif trouble == "server-error":
        ath.answer(FIND_PAYMENT_PATH, 502, raw=b"Bad Gateway")
    elif trouble == "refused-token":
        ath.answer(FIND_PAYMENT_PATH, 401, {"status": "error", "message": "Invalid token", "errorcode": "X1"})
    else:
        ath_says(ath, "CONFIRM")

    started = time.monotonic()
    response = lambda_handler.post(body)
    assert time.monotonic() - started < 2.5  # the timeout (0.5 s) bounds the wait
    assert response.status == 503 and response.json()["error"] == "verification_pending"
    assert nothing_changed()
    assert WebhookEvent.objects.get().outcome == WebhookEvent.Outcome.PENDING  # kept, for the relay

    settings.ATHM_PAYMENTS_API_BASE_URL = ath.base_url
    ath_says(ath)
    assert lambda_handler.post(body).json()["outcome"] == "applied"
    assert Payment.objects.get().status == "completed"


@pytest.mark.parametrize(
    "name", ["refund_sent.production", "payment_received", "donation_received", "simulated"]
)
def test_events_findpayment_cannot_confirm_are_applied_without_asking(lambda_handler, ath, name):
    response = lambda_handler.post(json.dumps(sample_data(name)))
    assert response.status == 200 and response.json()["outcome"] in {"applied", "simulated"}
    assert ath.requests == []


def test_verification_off_asks_nothing(lambda_handler, ath, settings):
    settings.ATHM_VERIFY = False
    assert lambda_handler.post(json.dumps(COMPLETED)).json()["outcome"] == "applied"
    assert ath.requests == []


def settings_in_a_new_process(child_env, **env) -> subprocess.CompletedProcess:
    code = "from django.conf import settings; import django; django.setup(); print(settings.ATHM_VERIFY)"
    return subprocess.run(
        [sys.executable, "-c", code], env={**child_env, **env}, cwd=ROOT, capture_output=True, text=True
    )


def test_verification_is_on_whenever_the_public_token_is_set(child_env):
    assert settings_in_a_new_process(child_env).stdout.strip() == "False"
    assert settings_in_a_new_process(child_env, ATHM_PUBLIC_TOKEN="pk").stdout.strip() == "True"
    off = settings_in_a_new_process(child_env, ATHM_PUBLIC_TOKEN="pk", ATHM_VERIFY="false")
    assert off.stdout.strip() == "False"
    refused = settings_in_a_new_process(child_env, ATHM_VERIFY="true")
    assert refused.returncode != 0 and "ATHM_VERIFY is on but ATHM_PUBLIC_TOKEN is not set" in refused.stderr


# --- ATH's answer is the record: every field it gives that identifies the order or the money -------------


def ath_answers_fully(fake, **changes):
    """findPayment's whole answer for the production sample's checkout, as ATH gives it."""
    data = {
        "ecommerceStatus": "COMPLETED",
        "ecommerceId": COMPLETED["ecommerceId"],
        "referenceNumber": COMPLETED["referenceNumber"],
        "total": 26,
        "subtotal": 24,
        "tax": 2,
        "fee": 0.6000000238418579,
        "netAmount": 25.4,
        "totalRefundedAmount": 0,
        "metadata1": "order-1002",
        "metadata2": "tienda-sj",
        "items": [
            {"name": "Pastelillo", "description": "Pastelillo", "quantity": 2, "price": 12, "tax": 1.5}
        ],
        **changes,
    }
    fake.answer(FIND_PAYMENT_PATH, 200, {"status": "success", "data": data})


@pytest.mark.parametrize(
    "forged, difference",
    [
        ({"metadata1": "order-9999"}, "metadata1 'order-9999', ATH 'order-1002'"),
        ({"metadata2": "otra-tienda"}, "metadata2 'otra-tienda', ATH 'tienda-sj'"),
        ({"items": [{"name": "Laptop", "quantity": 1, "price": 12}]}, "the items"),
        ({"items": [{"name": "Pastelillo", "quantity": 20, "price": 12}]}, "the items"),
        ({"fee": "0.01"}, "fee 0.01, ATH 0.60"),
        ({"netAmount": "25.99"}, "netAmount 25.99, ATH 25.40"),
        ({"subTotal": "26.00"}, "subtotal 26.00, ATH 24.00"),
        ({"tax": "0.00"}, "tax 0.00, ATH 2.00"),
    ],
)
def test_a_body_that_names_the_real_checkout_but_lies_about_the_order_is_rejected(
    lambda_handler, ath, signal_log, forged, difference
):
    ath_answers_fully(ath)
    response = lambda_handler.post(json.dumps({**COMPLETED, **forged}))
    assert response.status == 200 and response.json()["outcome"] == "rejected", response
    record = WebhookEvent.objects.get()
    assert record.error.startswith("ATH Móvil's findPayment answer differs: ") and difference in record.error
    assert nothing_changed() and signal_log.names() == []
    # ATH's own webhook, arriving later, records the genuine payment, with the genuine order.
    genuine = lambda_handler.post(json.dumps(COMPLETED))
    assert genuine.json()["outcome"] == "applied", genuine
    assert Payment.objects.get().metadata_1 == "order-1002" and signal_log.names() == ["payment_completed"]


def test_a_forged_cancel_of_another_order_is_rejected(lambda_handler, ath, signal_log):
    ath.answer(
        FIND_PAYMENT_PATH,
        200,
        {"status": "success", "data": {"ecommerceStatus": "CANCEL", "metadata1": "order-1005"}},
    )
    cancel = {**sample_data("ecommerce_cancelled.production"), "metadata1": "order-1002"}
    assert lambda_handler.post(json.dumps(cancel)).json()["outcome"] == "rejected"
    assert nothing_changed() and signal_log.names() == []


def test_the_payment_is_written_from_aths_answer_where_the_body_says_nothing(lambda_handler, ath):
    ath_answers_fully(ath, totalRefundedAmount=0)
    body = {
        key: value
        for key, value in COMPLETED.items()
        if key not in ("fee", "netAmount", "metadata2", "items")
    }
    assert lambda_handler.post(json.dumps(body)).json()["outcome"] == "applied"
    payment = Payment.objects.get()
    assert (str(payment.fee), str(payment.net_amount), payment.metadata_2) == ("0.60", "25.40", "tienda-sj")
    assert [(item["name"], item["quantity"], item["price"]) for item in payment.items] == [
        ("Pastelillo", 2, "12.00")
    ]


def test_float_noise_and_spacing_in_aths_answer_are_no_difference(lambda_handler, ath):
    ath_answers_fully(ath, netAmount=25.399999618530273, metadata1=" order-1002 ", total="26.00")
    assert lambda_handler.post(json.dumps(COMPLETED)).json()["outcome"] == "applied"


def test_the_date_daily_id_and_customer_are_aths_too(lambda_handler, ath):
    ath_answers_fully(
        ath,
        dailyTransactionId=31,
        transactionDate="2026-11-20 14:07:39",
        name="Luis A. Ortiz",
        email="luis.ortiz@example.com",
        phoneNumber="(787) 555-0199",
    )
    body = {**COMPLETED, "name": "Someone Else", "email": "forged@example.com", "dailyTransactionId": "0001"}
    assert lambda_handler.post(json.dumps(body)).json()["outcome"] == "applied"
    payment = Payment.objects.get()
    assert (payment.name, payment.email, payment.phone_number) == (
        "Luis A. Ortiz",
        "luis.ortiz@example.com",
        "7875550199",
    )
    assert payment.daily_transaction_id == 31
    assert payment.transaction_date.isoformat() == "2026-11-20T18:07:39+00:00"


def test_aths_answer_shapes_that_say_nothing_are_no_difference(lambda_handler, ath):
    ath_answers_fully(
        ath,
        items=[{"name": "Pastelillo", "quantity": 2.0, "price": "12.00"}],
        metadata1=None,
        metadata2="",
    )
    assert lambda_handler.post(json.dumps(COMPLETED)).json()["outcome"] == "applied"
    ath_answers_fully(ath, items=[], referenceNumber=None)
    other = {**COMPLETED, "ecommerceId": "another-checkout", "referenceNumber": "215070444-another"}
    assert lambda_handler.post(json.dumps(other)).json()["outcome"] == "applied"


# --- shapes of ATH's answer that must neither reject a genuine event nor keep it pending for ever ---------


def test_aths_items_without_names_are_compared_by_quantity_and_price(lambda_handler, ath, signal_log):
    ath_answers_fully(ath, items=[{"quantity": 2, "price": 12}])
    assert lambda_handler.post(json.dumps(COMPLETED)).json()["outcome"] == "applied"
    # ATH says nothing of the names: the body's stand, since quantity and price agree.
    assert [item["name"] for item in Payment.objects.get().items] == ["Pastelillo"]
    forged = {
        **COMPLETED,
        "ecommerceId": "another-checkout",
        "referenceNumber": "215070444-another",
        "items": [{"name": "Pastelillo", "quantity": 20, "price": 12}],
    }
    ath_answers_fully(ath, items=[{"quantity": 2, "price": 12}], referenceNumber="215070444-another")
    assert lambda_handler.post(json.dumps(forged)).json()["outcome"] == "rejected"


def test_aths_items_it_cannot_read_leave_the_body_s_and_say_so(lambda_handler, ath):
    ath_answers_fully(
        ath, items=[{"name": "Pastelillo", "quantity": 2, "price": "$12.00", "formattedPrice": "$12.00"}]
    )
    answer = lambda_handler.post(json.dumps(COMPLETED)).json()
    assert answer["outcome"] == "applied", answer  # not pending until ATH's items read otherwise
    items = Payment.objects.get().items
    assert [(item["name"], item["price"]) for item in items] == [("Pastelillo", "12.00")]
    warnings = WebhookEvent.objects.get().warnings
    assert any(warning["field"] == "items" and "findPayment" in warning["warning"] for warning in warnings)


@pytest.mark.parametrize("phone", [{"number": "7875550199"}, ["787"], True, "no phone"])
def test_an_unreadable_phone_in_aths_answer_leaves_the_body_s(lambda_handler, ath, phone):
    ath_answers_fully(ath, phoneNumber=phone)
    assert lambda_handler.post(json.dumps(COMPLETED)).json()["outcome"] == "applied"
    assert Payment.objects.get().phone_number == "7875550102"


def test_aths_metadata_given_as_a_number_is_still_compared_and_kept(lambda_handler, ath):
    ath_answers_fully(ath, metadata1=1002)
    assert lambda_handler.post(json.dumps({**COMPLETED, "metadata1": "9999"})).json()["outcome"] == "rejected"
    assert lambda_handler.post(json.dumps({**COMPLETED, "metadata1": "1002"})).json()["outcome"] == "applied"
    assert Payment.objects.get().metadata_1 == "1002"
