"""ATH Móvil's identifiers are compared exactly, on every database: ids that differ only by case or accent
are different payments, refunds and events.

MySQL's and MariaDB's default collations (``utf8mb4_general_ci``, ``utf8mb4_unicode_ci``, ...) call
``ABC123`` and ``abc123``, or ``pago-é`` and ``pago-e``, equal: without migration 0009's binary collation
one checkout would complete another's payment and a refund would be tied across the difference. The last
test reads the collations back from information_schema, so a later ``AlterField`` that drops them fails.
"""

import json

import pytest
from django.db import connection

from athm_core import processor
from athm_core.ath.client import FIND_PAYMENT_PATH
from athm_core.models import Payment, Refund, WebhookEvent
from athm_core.payloads import parse_data
from tests.conftest import sample_data
from tests.fake_athm import fake_athm_fixture  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

Outcome = WebhookEvent.Outcome
COMPLETED = "ecommerce_completed.documented"
PAYMENT = "payment_received"
REFUND = "refund_sent.documented"

# Pairs that MySQL's and MariaDB's case- and accent-insensitive collations call equal.
LOOK_ALIKE = pytest.mark.parametrize(
    ("first", "second"), [("ABC123", "abc123"), ("pago-é", "pago-e")], ids=["case", "accent"]
)


def deliver(name: str, **changes) -> WebhookEvent:
    data = {**sample_data(name), **changes}
    return processor.process(parse_data(data), raw_body=json.dumps(data), source_ip="192.0.2.1")


@LOOK_ALIKE
def test_ecommerce_ids_that_differ_only_by_case_or_accent_are_two_payments(signal_log, first, second):
    one = deliver(COMPLETED, ecommerceId=first, referenceNumber="215070443-one")
    other = deliver(COMPLETED, ecommerceId=second, referenceNumber="215070443-other")
    assert (one.outcome, other.outcome) == (Outcome.APPLIED, Outcome.APPLIED)
    assert sorted(Payment.objects.values_list("ecommerce_id", "reference_number")) == sorted(
        [(first, "215070443-one"), (second, "215070443-other")]
    )
    assert signal_log.names() == ["payment_completed", "payment_completed"]


@LOOK_ALIKE
def test_reference_numbers_that_differ_only_by_case_or_accent_are_two_payments(signal_log, first, second):
    one = deliver(PAYMENT, referenceNumber=first)
    other = deliver(PAYMENT, referenceNumber=second)
    assert (one.outcome, other.outcome) == (Outcome.APPLIED, Outcome.APPLIED)
    assert sorted(Payment.objects.values_list("reference_number", flat=True)) == sorted([first, second])
    assert signal_log.names() == ["payment_received", "payment_received"]


@pytest.mark.parametrize("refund_first", [False, True], ids=["payment-first", "refund-first"])
def test_a_refund_is_not_tied_to_a_payment_whose_reference_differs_only_by_case(signal_log, refund_first):
    if refund_first:
        refund_record = deliver(REFUND, referenceNumber="ref-abc-1")
        deliver(PAYMENT, referenceNumber="REF-ABC-1")
    else:
        deliver(PAYMENT, referenceNumber="REF-ABC-1")
        refund_record = deliver(REFUND, referenceNumber="ref-abc-1")
    # The relay's sweep for refunds left waiting does not tie it either.
    assert processor.link_waiting_refunds() == ([], [])

    assert refund_record.outcome == Outcome.APPLIED
    refund = Refund.objects.get()
    assert refund.reference_number == "ref-abc-1" and refund.payment is None
    payment = Payment.objects.get()
    assert payment.reference_number == "REF-ABC-1" and payment.total_refunded_amount == 0
    assert "refund_sent" not in signal_log.names()


def test_refunds_whose_reference_numbers_differ_only_by_case_are_two_refunds():
    one = deliver(REFUND, referenceNumber="REF-ABC-1")
    other = deliver(REFUND, referenceNumber="ref-abc-1")
    assert (one.outcome, other.outcome) == (Outcome.APPLIED, Outcome.APPLIED)
    assert sorted(Refund.objects.values_list("reference_number", flat=True)) == ["REF-ABC-1", "ref-abc-1"]


def test_a_look_alike_checkout_is_still_verified_with_ath(lambda_handler, fake_athm, settings):
    """A checkout applied before does not make a look-alike one "a redelivery" that skips ATH's check."""
    settings.ATHM_VERIFY = True
    settings.ATHM_PUBLIC_TOKEN = "pk_test_0123456789"
    settings.ATHM_VERIFY_TIMEOUT = 0.5
    genuine = {**sample_data(COMPLETED), "ecommerceId": "ABC123"}
    said = {"ecommerceStatus": "COMPLETED", "referenceNumber": genuine["referenceNumber"], "total": "3.00"}
    fake_athm.answer(FIND_PAYMENT_PATH, 200, {"status": "success", "data": said})
    assert lambda_handler.post(json.dumps(genuine)).json()["outcome"] == "applied"

    # ATH knows no checkout "abc123": a body that claims it completed is refused, not taken as a duplicate.
    fake_athm.answer(
        FIND_PAYMENT_PATH, 404, {"status": "error", "message": "not found", "errorcode": "BTRA_0031"}
    )
    forged = {**genuine, "ecommerceId": "abc123", "referenceNumber": "215070443-forged"}
    answer = lambda_handler.post(json.dumps(forged)).json()
    assert (answer["accepted"], answer["outcome"]) == (False, "rejected")
    assert [r.json["ecommerceId"] for r in fake_athm.requests_to(FIND_PAYMENT_PATH)] == ["ABC123", "abc123"]
    assert list(Payment.objects.values_list("ecommerce_id", flat=True)) == ["ABC123"]


# The columns holding ATH Móvil's identifiers and the keys made of them: (model, field).
EXACT_COLUMNS = [
    (Payment, "ecommerce_id"),
    (Payment, "reference_number"),
    (Payment, "fingerprint"),
    (Refund, "reference_number"),
    (Refund, "idempotency_key"),
    (WebhookEvent, "idempotency_key"),
]


@pytest.mark.skipif(
    connection.vendor != "mysql",
    reason="collations are MySQL's and MariaDB's: run with DATABASE_URL=mysql://... (make test-mariadb)",
)
def test_identifier_columns_have_a_binary_collation_after_migrating():
    """A later AlterField on these fields gives them the table's collation back: this test says so."""
    wanted = {(model._meta.db_table, model._meta.get_field(name).column) for model, name in EXACT_COLUMNS}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME, IS_NULLABLE,"
            " CHARACTER_MAXIMUM_LENGTH FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
        )
        columns = {(table, column): rest for table, column, *rest in cursor.fetchall()}
    found = {key: tuple(columns[key][:2]) for key in wanted}
    assert found == {key: ("utf8mb4", "utf8mb4_bin") for key in wanted}
    # Null-ability and length as the models say.
    for model, name in EXACT_COLUMNS:
        field = model._meta.get_field(name)
        _, _, nullable, length = columns[(model._meta.db_table, field.column)]
        assert (nullable == "YES", length) == (field.null, field.max_length), (model.__name__, name)
