"""Money that moved is never refused for a reason that is not its identity, type, status or money.

Through the real Lambda path (``handler.app.lambda_handler``), on every database: ATH Móvil's published
shapes without an ``ecommerceId``, amounts with float noise, descriptive text that cannot be stored as sent
(cleaned, and the cleaning recorded as warnings), and bodies in another declared charset (kept byte for
byte). Bodies whose identity or money is garbage are still refused: tests/test_hostile.py.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from athm_core import replay
from athm_core.ath.client import FIND_PAYMENT_PATH, REPORT_PATH
from athm_core.models import Payment, Refund, WebhookEvent
from tests.conftest import sample, sample_data
from tests.fake_athm import fake_athm_fixture  # noqa: F401
from tests.test_hostile import metrics_emitted

LEGACY_COMPLETED = sample_data("ecommerce_completed.legacy")
LEGACY_CANCELLED = sample_data("ecommerce_cancelled.legacy")
LEGACY_EXPIRED = sample_data("ecommerce_expired.legacy")


@pytest.fixture(autouse=True)
def plain(settings) -> None:
    settings.ATHM_VERIFY = False
    settings.ATHM_OUTBOX = True
    settings.ATHM_SNS_TOPIC_ARN = ""


def post(lambda_handler, data: Any, **options: Any):
    body = data if isinstance(data, (str, bytes)) else json.dumps(data, ensure_ascii=False)
    return lambda_handler.post(body, **options)


def changed(name: str, /, **changes: Any) -> dict[str, Any]:
    return {**sample_data(name), **changes}


# --- 1. eCommerce events without an ecommerceId (ATH Móvil's published examples) ----------------------


def test_a_legacy_completion_is_recorded_by_its_reference_number(lambda_handler, signal_log):
    response = post(lambda_handler, LEGACY_COMPLETED)
    assert response.status == 200, response
    assert response.json()["outcome"] == "applied"
    payment = Payment.objects.get()
    assert (payment.transaction_type, payment.status) == ("ecommerce", "completed")
    assert payment.ecommerce_id is None
    assert payment.reference_number == LEGACY_COMPLETED["referenceNumber"]
    assert (payment.total, payment.fee, payment.metadata_1) == (
        Decimal("12.50"),
        Decimal("0.31"),
        "order-2044",
    )
    assert signal_log.names() == ["payment_completed"]

    again = post(lambda_handler, LEGACY_COMPLETED)
    assert again.json()["outcome"] == "duplicate"
    assert Payment.objects.count() == 1 and signal_log.names() == ["payment_completed"]


@pytest.mark.parametrize(
    "data, status, signal",
    [(LEGACY_CANCELLED, "cancelled", "payment_cancelled"), (LEGACY_EXPIRED, "expired", "payment_expired")],
    ids=["cancelled", "expired"],
)
def test_a_legacy_cancel_or_expiry_is_its_own_payment_and_its_redelivery_a_duplicate(
    lambda_handler, signal_log, data, status, signal
):
    response = post(lambda_handler, data)
    assert response.status == 200, response
    assert response.json()["outcome"] == "applied"
    payment = Payment.objects.get()
    assert (payment.status, payment.ecommerce_id, payment.reference_number) == (status, None, None)
    # How the seed's receivers find the order.
    assert payment.metadata_1 == data["metadata1"]
    assert signal_log.names() == [signal]

    assert post(lambda_handler, data).json()["outcome"] == "duplicate"
    assert Payment.objects.count() == 1 and signal_log.names() == [signal]

    # Another checkout in the same shape is another payment.
    other = {**data, "metadata1": "order-3000"}
    assert post(lambda_handler, other).json()["outcome"] == "applied"
    assert Payment.objects.count() == 2


def test_a_later_event_naming_the_ecommerce_id_joins_the_legacy_payment(lambda_handler, signal_log):
    post(lambda_handler, LEGACY_COMPLETED)
    with_id = {**LEGACY_COMPLETED, "ecommerceId": "0f8fad5b-d9cb-469f-a165-70867728950e"}
    response = post(lambda_handler, with_id)
    assert response.json()["outcome"] == "duplicate"
    payment = Payment.objects.get()
    assert payment.ecommerce_id == with_id["ecommerceId"]
    assert payment.reference_number == LEGACY_COMPLETED["referenceNumber"]
    assert signal_log.names() == ["payment_completed"]
    # And the published shape, once more, is the same payment.
    assert post(lambda_handler, LEGACY_COMPLETED).json()["outcome"] == "duplicate"
    assert Payment.objects.count() == 1


def test_a_legacy_redelivery_of_a_payment_recorded_with_its_ecommerce_id_is_a_duplicate(lambda_handler):
    post(lambda_handler, {**LEGACY_COMPLETED, "ecommerceId": "0f8fad5b-d9cb-469f-a165-70867728950e"})
    assert post(lambda_handler, LEGACY_COMPLETED).json()["outcome"] == "duplicate"
    assert Payment.objects.count() == 1


def test_a_legacy_completion_of_a_reference_that_an_app_payment_holds_is_rejected(lambda_handler):
    app_payment = changed("payment_received", referenceNumber=LEGACY_COMPLETED["referenceNumber"])
    post(lambda_handler, app_payment)
    response = post(lambda_handler, LEGACY_COMPLETED)
    assert response.status == 200 and response.json()["outcome"] == "rejected"
    assert Payment.objects.get().transaction_type == "payment"


# With verification on, an event without an ecommerceId cannot be checked with findPayment.

PUBLIC_TOKEN = "pk_test_0123456789"


@pytest.fixture
def ath(fake_athm, settings):
    settings.ATHM_VERIFY = True
    settings.ATHM_PUBLIC_TOKEN = PUBLIC_TOKEN
    settings.ATHM_PRIVATE_TOKEN = ""
    settings.ATHM_VERIFY_TIMEOUT = 0.5
    return fake_athm


@pytest.mark.parametrize("data", [LEGACY_COMPLETED, LEGACY_CANCELLED], ids=["completed", "cancelled"])
def test_with_verification_and_no_private_token_it_is_kept_unverified_never_applied(
    lambda_handler, ath, signal_log, data
):
    response = post(lambda_handler, data)
    assert response.status == 200, response
    answer = response.json()
    assert answer["accepted"] is False and answer["outcome"] == "unverified"
    assert not Payment.objects.exists() and signal_log.names() == []
    record = WebhookEvent.objects.get()
    assert record.outcome == "unverified" and "ecommerceId" in record.error
    assert ath.requests == []


def report_lists(ath, *rows: dict[str, Any]) -> None:
    ath.answer(REPORT_PATH, 200, list(rows))


def test_with_the_private_token_the_transaction_report_confirms_the_reference(
    lambda_handler, ath, settings, signal_log
):
    settings.ATHM_PRIVATE_TOKEN = "sk_test_private"
    report_lists(ath, {**LEGACY_COMPLETED, "totalRefundAmount": "0.00"})
    response = post(lambda_handler, LEGACY_COMPLETED)
    assert response.json()["outcome"] == "applied", response
    assert Payment.objects.get().status == "completed"
    assert signal_log.names() == ["payment_completed"]
    assert ath.requests_to(FIND_PAYMENT_PATH) == []
    [request] = ath.requests_to(REPORT_PATH)
    assert request.json["privateToken"] == "sk_test_private"


def test_the_report_contradicting_the_total_rejects_it(lambda_handler, ath, settings, signal_log):
    settings.ATHM_PRIVATE_TOKEN = "sk_test_private"
    report_lists(ath, {**LEGACY_COMPLETED, "total": "1.25"})
    response = post(lambda_handler, LEGACY_COMPLETED)
    assert response.json()["outcome"] == "rejected"
    assert not Payment.objects.exists() and signal_log.names() == []


def test_a_reference_the_report_does_not_list_yet_is_pending_and_applied_when_it_does(
    lambda_handler, ath, settings, signal_log
):
    settings.ATHM_PRIVATE_TOKEN = "sk_test_private"
    report_lists(ath)
    response = post(lambda_handler, LEGACY_COMPLETED)
    assert response.status == 503 and response.json()["error"] == "verification_pending", response
    assert not Payment.objects.exists()
    # Once ATH's report lists it, the relay applies it.
    report_lists(ath, LEGACY_COMPLETED)
    assert replay.finish_pending(retry_now=True).verification["settled"] == {"applied": 1}
    assert Payment.objects.get().status == "completed" and signal_log.names() == ["payment_completed"]


# --- 2. Float noise ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, token, cents",
    [
        ("fee", "0.09999996423721313", "0.10"),  # 0.7 - 0.6 in single precision
        ("netAmount", "0.10000002384185791", "0.10"),
        ("total", "26.000999", "26.00"),
        ("total", "25.9991", "26.00"),
        ("tax", '"1.8299999237060547"', "1.83"),
    ],
)
def test_an_amount_within_a_tenth_of_a_cent_is_that_cent_value(lambda_handler, field, token, cents):
    body = json.dumps(changed("ecommerce_completed.production", **{field: "@@"})).replace('"@@"', token)
    response = post(lambda_handler, body)
    assert response.status == 200, response
    column = {"netAmount": "net_amount"}.get(field, field)
    assert getattr(Payment.objects.get(), column) == Decimal(cents)


@pytest.mark.parametrize("token", ["3.005", '"3.005"', "3.001", "3.0015"])
def test_an_amount_further_off_is_still_refused_naming_the_field(lambda_handler, token):
    body = json.dumps(changed("ecommerce_completed.production", total="@@")).replace('"@@"', token)
    response = post(lambda_handler, body)
    assert response.status == 400, response
    assert response.json()["detail"].startswith("total: has more than two decimals")
    assert not Payment.objects.exists()


# --- 3. Descriptive text that cannot be stored as sent ---------------------------------------------------

COMPLETED = sample_data("ecommerce_completed.production")


def with_items(**changes: Any) -> dict[str, Any]:
    [entry] = COMPLETED["items"]
    return changed("ecommerce_completed.production", items=[{**entry, **changes}])


DIRTY = {
    "NUL in name": (
        changed("ecommerce_completed.production", name="Luis\u0000Ortiz"),
        lambda payment: payment.name == "Luis\ufffdOrtiz",
        "name",
    ),
    "lone surrogate in message": (
        json.dumps(changed("ecommerce_completed.production", message="@@")).replace(
            '"@@"', '"Gracias \\ud83d"'
        ),
        lambda payment: payment.message == "Gracias \ufffd",
        "message",
    ),
    "message of 1,001 characters": (
        changed("ecommerce_completed.production", message="m" * 1001),
        lambda payment: payment.message == "m" * 1000,
        "message",
    ),
    "metadata2 of 256": (
        changed("ecommerce_completed.production", metadata2="x" * 256),
        lambda payment: payment.metadata_2 == "x" * 255,
        "metadata2",
    ),
    "NUL in an item's description": (
        with_items(description="Caf\u0000é"),
        lambda payment: payment.items[0]["description"] == "Caf\ufffdé",
        "items[0].description",
    ),
    "phoneNumber as a float": (
        json.dumps(changed("ecommerce_completed.production", phoneNumber="@@")).replace(
            '"@@"', "7875550102.0"
        ),
        lambda payment: payment.phone_number == "7875550102",
        "phoneNumber",
    ),
    "name as a number": (
        changed("ecommerce_completed.production", name=5),
        lambda payment: payment.name == "5",
        "name",
    ),
    "email as an object": (
        changed("ecommerce_completed.production", email={"to": "x"}),
        lambda payment: payment.email == "",
        "email",
    ),
    "an item's quantity as a fraction": (
        with_items(quantity="1.5"),
        lambda payment: payment.items[0]["quantity"] is None,
        "items[0].quantity",
    ),
    "items as text": (
        changed("ecommerce_completed.production", items="Café"),
        lambda payment: payment.items == [],
        "items",
    ),
}


@pytest.mark.parametrize(
    "data, stored_right, field", [pytest.param(*case, id=name) for name, case in DIRTY.items()]
)
def test_dirty_text_is_cleaned_recorded_as_a_warning_and_the_payment_kept(
    lambda_handler, signal_log, capsys, data, stored_right, field
):
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    capsys.readouterr()
    response = post(lambda_handler, body)
    assert response.status == 200, response
    assert response.json()["outcome"] == "applied"
    assert response.json()["warnings"] == 1
    payment = Payment.objects.get()
    assert payment.status == "completed" and stored_right(payment)
    assert signal_log.names() == ["payment_completed"]
    record = WebhookEvent.objects.get()
    assert [warning["field"] for warning in record.warnings] == [field]
    # The stored body keeps everything that was sent.
    assert record.body_bytes == body.encode("utf-8", "surrogatepass")
    assert "WebhookWarnings" in metrics_emitted(capsys)


ADMIN_SCRIPT = """
import json
from django.contrib.auth.models import User
from django.test import Client
from athm_core.receive import receive
delivery = receive(json.dumps(BODY).encode())
User.objects.create_superuser("admin", "admin@example.com", "pw")
client = Client()
client.force_login(User.objects.get())
change = client.get(f"/admin/athm_core/webhookevent/{delivery.record.pk}/change/").content.decode()
flagged = client.get("/admin/athm_core/webhookevent/?has_warnings=yes").content.decode()
clean = client.get("/admin/athm_core/webhookevent/?has_warnings=no").content.decode()
link = f"/{delivery.record.pk}/change/"
print(json.dumps({"change": change, "flagged": link in flagged, "clean": link in clean}))
"""


@pytest.mark.django_db(transaction=True)
def test_the_admin_shows_the_warnings(child_env, tmp_path):
    from tests.test_admin_notices import run_with_the_admin

    body = changed("ecommerce_completed.production", metadata2="x" * 256)
    result = run_with_the_admin(f"BODY = {body!r}\n" + ADMIN_SCRIPT, child_env, tmp_path)
    assert "metadata2" in result["change"] and "cut from 256 to 255 characters" in result["change"]
    assert result["flagged"] and not result["clean"]


# --- 6. The audit record is byte-exact ------------------------------------------------------------------


def test_a_body_in_a_declared_charset_is_read_with_it_and_kept_byte_for_byte(lambda_handler, signal_log):
    data = changed("payment_received", name="Ana Colón", message="¡Gracias!")
    raw = json.dumps(data, ensure_ascii=False).encode("iso-8859-1")
    response = post(lambda_handler, raw, headers={"content-type": "application/json; charset=ISO-8859-1"})
    assert response.status == 200, response
    payment = Payment.objects.get()
    assert (payment.name, payment.message) == ("Ana Colón", "¡Gracias!")
    record = WebhookEvent.objects.get()
    assert record.body_bytes == raw and record.charset.lower() == "iso-8859-1"
    assert "Colón" in record.raw_body
    # A reprocess reads the same bytes the same way.
    [result] = replay.reprocess([record])
    assert result.status == "duplicate", result


def test_a_utf8_body_is_stored_once_as_text(lambda_handler):
    post(lambda_handler, sample("payment_received"))
    record = WebhookEvent.objects.get()
    assert record.raw_bytes is None and record.body_bytes == sample("payment_received").encode()


@pytest.mark.parametrize(
    "raw",
    [b'{"name": "\xc0\xaf"}', b"\x00" + sample("simulated").encode(), b"\xff\xfe" + b"x" * 20],
    ids=["invalid UTF-8", "NUL", "binary"],
)
def test_an_unreadable_body_is_kept_byte_for_byte(lambda_handler, raw):
    response = post(lambda_handler, raw, headers={"content-type": "application/octet-stream; x=1"})
    # Declared as something other than JSON: refused before it is read.
    assert response.status == 415
    response = post(lambda_handler, raw)
    assert response.status == 400, response
    record = WebhookEvent.objects.get()
    assert record.outcome == "invalid" and record.body_bytes == raw
    assert "\x00" not in record.raw_body


def test_an_unknown_charset_is_read_as_utf8_with_a_warning(lambda_handler):
    response = post(
        lambda_handler,
        sample("payment_received"),
        headers={"content-type": "application/json; charset=klingon"},
    )
    assert response.status == 200, response
    record = WebhookEvent.objects.get()
    assert record.outcome == "applied"
    assert [warning["field"] for warning in record.warnings] == ["charset"]


# --- With verification on, unreadable amounts come from ATH Móvil's findPayment answer ------------------


def ath_finds(ath, **data: Any) -> None:
    found = {
        "ecommerceStatus": "COMPLETED",
        "referenceNumber": COMPLETED["referenceNumber"],
        "total": COMPLETED["total"],
        "fee": 0.6000000238418579,
        "netAmount": "25.40",
        **data,
    }
    ath.answer(FIND_PAYMENT_PATH, 200, {"status": "success", "data": found})


def test_unreadable_amounts_are_taken_from_find_payment_with_a_warning(lambda_handler, ath, signal_log):
    ath_finds(ath)
    body = changed("ecommerce_completed.production", fee="cero", netAmount={"amount": 25.4})
    response = post(lambda_handler, body)
    assert response.status == 200, response
    assert response.json()["outcome"] == "applied"
    payment = Payment.objects.get()
    assert (payment.total, payment.fee, payment.net_amount) == (
        Decimal("26.00"),
        Decimal("0.60"),
        Decimal("25.40"),
    )
    assert signal_log.names() == ["payment_completed"]
    record = WebhookEvent.objects.get()
    assert [warning["field"] for warning in record.warnings] == ["fee", "netAmount"]
    assert "findPayment" in record.warnings[0]["warning"]


def test_an_unreadable_total_from_find_payment_is_still_checked_against_the_body(lambda_handler, ath):
    ath_finds(ath)
    response = post(lambda_handler, changed("ecommerce_completed.production", total="veintiséis"))
    assert response.status == 200 and response.json()["outcome"] == "applied", response
    assert Payment.objects.get().total == Decimal("26.00")
    # A readable amount that ATH contradicts is not replaced: the check rejects the event.
    other = changed("ecommerce_completed.production", fee="cero", ecommerceId="another-checkout")
    ath_finds(ath, total="20.00")
    response = post(lambda_handler, other)
    assert response.json()["outcome"] == "rejected", response
    assert Payment.objects.count() == 1


def test_without_verification_unreadable_amounts_are_refused(lambda_handler):
    response = post(lambda_handler, changed("ecommerce_completed.production", fee="cero"))
    assert response.status == 400 and response.json()["detail"].startswith("fee: is not an amount")
    assert not Payment.objects.exists()


def test_find_payment_not_knowing_the_checkout_leaves_the_body_refused(lambda_handler, ath):
    ath.answer(FIND_PAYMENT_PATH, 200, {"status": "success", "data": None})
    response = post(lambda_handler, changed("ecommerce_completed.production", fee="cero"))
    assert response.status == 400 and response.json()["detail"].startswith("fee: ")
    assert not Payment.objects.exists()


# --- Found by review: kinds of input that were still refused or mishandled ------------------------------


def test_a_byte_that_is_not_utf8_in_a_name_is_replaced_with_a_warning(lambda_handler):
    raw = json.dumps(changed("payment_received", name="Ana Colón"), ensure_ascii=False).encode("latin-1")
    response = post(lambda_handler, raw)
    assert response.status == 200 and response.json()["outcome"] == "applied", response
    assert Payment.objects.get().name == "Ana Col\ufffdn"
    record = WebhookEvent.objects.get()
    assert [warning["field"] for warning in record.warnings] == ["body"] and record.body_bytes == raw


@pytest.mark.parametrize(
    "charset", ["base64", "rot13", "zlib", "hex", "idna", "punycode", "undefined", '"x"']
)
def test_a_charset_that_reads_no_text_is_read_as_utf8_with_a_warning(lambda_handler, charset):
    content_type = f"application/json; charset={charset}"
    response = post(lambda_handler, sample("payment_received"), headers={"content-type": content_type})
    assert response.status == 200 and response.json()["outcome"] == "applied", response
    assert [warning["field"] for warning in WebhookEvent.objects.get().warnings] == ["charset"]


def test_a_byte_order_mark_is_left_out_with_a_warning_and_kept_in_the_body(lambda_handler):
    raw = "\ufeff".encode() + sample("payment_received").encode()
    response = post(lambda_handler, raw)
    assert response.status == 200 and response.json()["outcome"] == "applied", response
    record = WebhookEvent.objects.get()
    assert [warning["field"] for warning in record.warnings] == ["body"] and record.body_bytes == raw


# Underscores, Arabic-Indic and full-width digits: Python's Decimal reads them all.
NOT_ASCII_AMOUNTS = [
    "12_50",
    "\u0661\u0662.\u0665\u0660",
    "\uff11\uff12.\uff15\uff10",
    "12.50.1",
    "$12.50",
    "0x10",
]


@pytest.mark.parametrize("text", NOT_ASCII_AMOUNTS)
def test_numbers_that_are_not_ascii_amounts_are_refused(lambda_handler, text):
    response = post(lambda_handler, changed("payment_received", total=text))
    assert response.status == 400 and response.json()["detail"].startswith("total: is not an amount"), (
        response
    )
    assert not Payment.objects.exists()


def test_minus_zero_is_zero(lambda_handler):
    assert post(lambda_handler, changed("payment_received", fee="-0")).json()["outcome"] == "applied"
    assert str(Payment.objects.get().fee) == "0.00"


def test_one_refund_dated_with_another_offset_is_the_same_refund(lambda_handler, signal_log):
    local = changed("refund_sent.production", date="2026-11-21 05:14:03")
    utc = changed("refund_sent.production", date="2026-11-21 09:14:03Z")
    assert post(lambda_handler, local).json()["outcome"] == "applied"
    assert post(lambda_handler, utc).json()["outcome"] == "duplicate"
    assert Refund.objects.count() == 1


def test_a_legacy_cancel_with_its_items_in_another_order_is_the_same_checkout(lambda_handler, signal_log):
    first = {**LEGACY_CANCELLED, "items": [{"name": "A", "price": "1.00"}, {"name": "B", "price": "2.00"}]}
    again = {**first, "items": list(reversed(first["items"]))}
    assert post(lambda_handler, first).json()["outcome"] == "applied"
    assert post(lambda_handler, again).json()["outcome"] == "duplicate"
    assert Payment.objects.count() == 1 and signal_log.names() == ["payment_cancelled"]


def test_numbers_too_long_for_python_are_cleaned_in_text_and_refused_as_amounts(lambda_handler):
    body = json.dumps(changed("payment_received", name="@@")).replace('"@@"', "7" * 5000)
    response = post(lambda_handler, body)
    assert response.status == 200 and Payment.objects.get().name == "7" * 255, response
    body = json.dumps(changed("donation_received", total="@@")).replace('"@@"', "7" * 5000)
    response = post(lambda_handler, body)
    assert response.status == 400 and response.json()["detail"].startswith("total: is not below the limit")


def test_a_whole_daily_id_written_as_a_decimal_is_read(lambda_handler):
    body = json.dumps(changed("payment_received", dailyTransactionID="@@")).replace('"@@"', "8.0")
    assert post(lambda_handler, body).json()["outcome"] == "applied"
    assert Payment.objects.get().daily_transaction_id == 8


def test_a_completion_naming_a_cancelled_checkout_and_a_legacy_completions_reference_is_a_duplicate(
    lambda_handler, signal_log
):
    """A cancel recorded under its ecommerceId, the completion recorded apart from ATH's published shape
    (its reference number only), then the completion naming both: the money is recorded once."""
    cancelled = changed("ecommerce_cancelled.production", ecommerceId="E-9")
    assert post(lambda_handler, cancelled).json()["outcome"] == "applied"
    assert post(lambda_handler, LEGACY_COMPLETED).json()["outcome"] == "applied"
    both = {**LEGACY_COMPLETED, "ecommerceId": "E-9"}
    response = post(lambda_handler, both)
    assert response.status == 200 and response.json()["outcome"] == "duplicate", response
    assert post(lambda_handler, both).json()["outcome"] == "duplicate"
    assert signal_log.names() == ["payment_cancelled", "payment_completed"]
    assert (
        Payment.objects.filter(status="completed").get().reference_number
        == LEGACY_COMPLETED["referenceNumber"]
    )


def test_the_report_listing_a_refund_with_the_same_reference_first_still_confirms_the_payment(
    lambda_handler, ath, settings, signal_log
):
    settings.ATHM_PRIVATE_TOKEN = "sk_test_private"
    refund = changed("refund_sent.production", referenceNumber=LEGACY_COMPLETED["referenceNumber"])
    report_lists(ath, refund, LEGACY_COMPLETED)
    assert post(lambda_handler, LEGACY_COMPLETED).json()["outcome"] == "applied"
    assert signal_log.names() == ["payment_completed"]


def test_only_an_unverifiable_completion_trips_the_alarms_metric(lambda_handler, ath, capsys):
    capsys.readouterr()
    post(lambda_handler, LEGACY_CANCELLED)
    names = metrics_emitted(capsys)
    assert "WebhookUnverifiable" in names and "WebhookUnverifiablePayment" not in names
    post(lambda_handler, LEGACY_COMPLETED)
    assert "WebhookUnverifiablePayment" in metrics_emitted(capsys)
