"""Every payload shape ATH Móvil sends reads into one normalized event; bad ones name the bad field."""

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from athm_core.events import EventType
from athm_core.payloads import PUERTO_RICO, PayloadError, parse, parse_data
from tests.conftest import SAMPLES, sample, sample_data

AST = timezone(timedelta(hours=-4))


def test_every_sample_parses_to_its_event_type():
    expected = {
        "ecommerce_completed.documented": EventType.ECOMMERCE_COMPLETED,
        "ecommerce_completed.production": EventType.ECOMMERCE_COMPLETED,
        "ecommerce_cancelled.documented": EventType.ECOMMERCE_CANCELLED,
        "ecommerce_cancelled.production": EventType.ECOMMERCE_CANCELLED,
        "ecommerce_expired": EventType.ECOMMERCE_EXPIRED,
        "refund_sent.documented": EventType.REFUND_SENT,
        "refund_sent.production": EventType.REFUND_SENT,
        "payment_received": EventType.PAYMENT_RECEIVED,
        "donation_received": EventType.DONATION_RECEIVED,
        "simulated": EventType.SIMULATED,
        "ecommerce_completed.legacy": EventType.ECOMMERCE_COMPLETED,
        "ecommerce_cancelled.legacy": EventType.ECOMMERCE_CANCELLED,
        "ecommerce_expired.legacy": EventType.ECOMMERCE_EXPIRED,
    }
    assert {path.stem for path in SAMPLES.glob("*.json")} == set(expected)
    for name, event_type in expected.items():
        assert parse(sample(name)).type == event_type, name


def test_documented_completed_payment():
    event = parse(sample("ecommerce_completed.documented"))
    assert event.ecommerce_id == "6f1c2a8e-8f2b-4a43-9a57-0c6f4b1d2e31"
    assert event.reference_number == "215070443-402894c185ab1be40185acfe61c2000b"
    assert event.daily_transaction_id == 7
    assert (event.total, event.subtotal, event.tax) == (Decimal("3.00"), Decimal("2.50"), Decimal("0.50"))
    assert (event.fee, event.net_amount, event.total_refunded_amount) == (
        Decimal("0.06"),
        Decimal("2.94"),
        Decimal("0.00"),
    )
    assert event.date == datetime(2026, 11, 20, 14, 5, 12, tzinfo=AST)
    assert event.date.tzinfo is PUERTO_RICO
    assert (event.metadata_1, event.metadata_2) == ("order-1001", "tienda-sj")
    assert (event.name, event.phone_number, event.email) == (
        "Carmen Rivera",
        "7875550101",
        "carmen@example.com",
    )
    [item] = event.items
    assert (item.name, item.quantity, item.price, item.tax, item.metadata) == (
        "Café",
        1,
        Decimal("2.50"),
        Decimal("0.50"),
        "sku-ca-1",
    )


def test_production_completed_payment_with_numbers_and_float_noise():
    event = parse(sample("ecommerce_completed.production"))
    assert event.type == EventType.ECOMMERCE_COMPLETED
    # 0.6000000238418579 is 0.60 sent as a single-precision float.
    assert event.fee == Decimal("0.60")
    assert str(event.fee) == "0.60"
    assert (event.total, event.subtotal, event.tax, event.net_amount) == (
        Decimal("26.00"),
        Decimal("24.00"),
        Decimal("2.00"),
        Decimal("25.40"),
    )
    assert event.daily_transaction_id == 8
    assert event.phone_number == "7875550102"
    assert event.business_name == "Tienda San Juan"
    assert event.transaction_date == datetime(2026, 11, 20, 14, 7, 37, tzinfo=AST)
    assert event.effective_date == event.transaction_date
    [item] = event.items
    assert (item.quantity, item.price, item.tax, item.sku) == (2, Decimal("12.00"), Decimal("1.50"), "")


def test_cancelled_shapes_have_no_reference_number():
    documented = parse(sample("ecommerce_cancelled.documented"))
    production = parse(sample("ecommerce_cancelled.production"))
    assert documented.reference_number is None and production.reference_number is None
    assert production.daily_transaction_id is None
    assert (production.total, production.subtotal, production.tax) == (
        Decimal("10.00"),
        Decimal("9.00"),
        Decimal("1.00"),
    )
    assert production.date == datetime(2026, 11, 20, 15, 0, 3, tzinfo=AST)


def test_refund_production_shape():
    event = parse(sample("refund_sent.production"))
    assert event.reference_number == "215070444-402894c185ab1be40185acfe61c2000c"
    assert event.total == Decimal("26.00")
    assert event.name == "Luis Ortiz"  # stray leading space removed
    assert event.phone_number == "7875550102"  # "(787) 555-0102"
    assert event.daily_transaction_id == 3
    assert event.items == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3.00", "3.00"),
        (" 3.5 ", "3.50"),
        (3, "3.00"),
        (0.07, "0.07"),
        (0.6000000238418579, "0.60"),
        (25.400000000000002, "25.40"),
        (12345.669921875, "12345.67"),  # 12345.67 as a float32
        ("", None),
        (None, None),
    ],
)
def test_money_is_exact_cents(value, expected):
    data = sample_data("payment_received")
    data["fee"] = value
    event = parse(json.dumps(data))
    assert event.fee == (None if expected is None else Decimal(expected))
    if expected is not None:
        assert str(event.fee) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("-1.00", "must not be negative"),
        ("3.005", "more than two decimals"),
        (1.001, "more than two decimals"),
        ("abc", "is not an amount"),
        ("NaN", "finite"),
        ("Infinity", "finite"),
        ("1000000", "limit"),
        ("1e400", "limit"),
        (True, "must be an amount"),
        ([1], "must be an amount"),
    ],
)
def test_bad_amounts_name_the_field(value, problem):
    data = sample_data("payment_received")
    data["total"] = value
    with pytest.raises(PayloadError) as caught:
        parse(json.dumps(data))
    assert caught.value.field == "total"
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-01-01 12:00:00.0", datetime(2020, 1, 1, 12, tzinfo=AST)),
        ("2025-12-08 16:30:52", datetime(2025, 12, 8, 16, 30, 52, tzinfo=AST)),
        ("2025-12-08T16:30:52.123456", datetime(2025, 12, 8, 16, 30, 52, 123456, tzinfo=AST)),
        ("2025-12-08 16:30:52.12", datetime(2025, 12, 8, 16, 30, 52, 120000, tzinfo=AST)),
        ("2025-12-08T20:30:52Z", datetime(2025, 12, 8, 20, 30, 52, tzinfo=UTC)),
    ],
)
def test_dates_are_aware_puerto_rico_time(value, expected):
    data = sample_data("donation_received")
    data["date"] = value
    event = parse(json.dumps(data))
    assert event.date == expected
    assert event.date.utcoffset() is not None


BAD_DATES = ["yesterday", "2025-13-01 00:00:00", "2025-12-08", 1764000000000]


@pytest.mark.parametrize("value", BAD_DATES)
def test_a_refunds_bad_date_is_refused_naming_the_field(value):
    # A refund's date is part of its identity: two partial refunds share a reference number.
    data = sample_data("refund_sent.production")
    data["date"] = value
    with pytest.raises(PayloadError, match=r"^date: "):
        parse(json.dumps(data))


@pytest.mark.parametrize("value", BAD_DATES)
def test_a_payments_bad_date_is_left_out_with_a_warning(value):
    data = sample_data("donation_received")
    data["date"] = value
    event = parse(json.dumps(data))
    assert event.date is None and event.total == Decimal(data["total"])
    assert [warning.field for warning in event.warnings] == ["date"]


def test_daily_id_and_phone_variants():
    data = sample_data("payment_received")
    data.pop("dailyTransactionID")
    data["dailyTransactionId"] = 35
    data["phoneNumber"] = 7875551234
    event = parse(json.dumps(data))
    assert (event.daily_transaction_id, event.phone_number) == (35, "7875551234")


def test_uppercase_refund_and_stray_spaces_in_ids():
    data = sample_data("ecommerce_completed.documented")
    data["transactionType"] = "ECOMMERCE"
    data["status"] = "COMPLETED"
    data["ecommerceId"] = " 402894d56b240610016b2e6c78a6003a "
    event = parse(json.dumps(data))
    assert event.ecommerce_id == "402894d56b240610016b2e6c78a6003a"


def test_unknown_fields_are_ignored():
    data = sample_data("payment_received")
    data["somethingNew"] = {"nested": [1, 2, 3]}
    assert parse(json.dumps(data)).reference_number == data["referenceNumber"]


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"transactionType": "wire"}, "transactionType", "unknown value 'wire'"),
        ({"transactionType": None}, "transactionType", "is required"),
        ({"status": "pending"}, "status", "unknown value 'pending'"),
        ({"referenceNumber": ""}, "referenceNumber", "is required"),
        ({"ecommerceId": 42}, "ecommerceId", "must be a string"),
        ({"ecommerceId": "a\x00b"}, "ecommerceId", "NUL"),
        ({"total": None}, "total", "is required"),
        ({"items": [{"price": "x"}]}, "items[0].price", "is not an amount"),
        ({"dailyTransactionID": "seven"}, "dailyTransactionID", "whole number"),
    ],
)
def test_invalid_fields_are_named(change, field, problem):
    data = sample_data("ecommerce_completed.documented")
    data.update(change)
    with pytest.raises(PayloadError) as caught:
        parse(json.dumps(data))
    assert caught.value.field == field
    assert problem in caught.value.problem


@pytest.mark.parametrize(
    ("change", "field", "warning", "stored"),
    [
        ({"name": 42}, "name", "a number, taken as text", ("name", "42")),
        ({"name": "x" * 300}, "name", "cut from 300 to 255 characters", ("name", "x" * 255)),
        ({"name": "a\x00b"}, "name", "NUL characters or unpaired surrogates", ("name", "a\ufffdb")),
        ({"email": ["a@b"]}, "email", "a list, not text: left out", ("email", "")),
        ({"message": "m" * 1001}, "message", "cut from 1001 to 1000", ("message", "m" * 1000)),
        ({"items": "many"}, "items", "a string, not a list: left out", ("items", ())),
        ({"items": [{"quantity": "1.5"}]}, "items[0].quantity", "not a whole number", None),
        ({"items": [7]}, "items[0]", "a number, not an object: left out", ("items", ())),
        ({"phoneNumber": ["787"]}, "phoneNumber", "a list, not text", ("phone_number", "")),
        (
            {"phoneNumber": 7875550102.0},
            "phoneNumber",
            "a number, taken as text",
            ("phone_number", "7875550102"),
        ),
        ({"phoneNumber": "7" * 50}, "phoneNumber", "cut from 50 to 40 digits", ("phone_number", "7" * 40)),
        ({"date": None}, "date", "absent", ("date", None)),
        ({"transactionDate": False}, "transactionDate", "must be a date string", ("transaction_date", None)),
    ],
)
def test_descriptive_fields_are_cleaned_and_the_cleaning_is_a_warning(change, field, warning, stored):
    data = sample_data("ecommerce_completed.documented")
    data.update(change)
    event = parse(json.dumps(data))
    [cleaned] = event.warnings
    assert cleaned.field == field and warning in cleaned.warning, cleaned
    if stored is not None:
        assert getattr(event, stored[0]) == stored[1]
    else:
        assert event.items[0].quantity is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, not a list"),
        ('"text"', "must be a JSON object, not a string"),
        ('{"total": NaN}', "NaN is not a number"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
        (b"\xff\xfe{}", "not valid JSON"),  # the bytes replaced with U+FFFD, then read as JSON
    ],
)
def test_unreadable_bodies(body, problem):
    with pytest.raises(PayloadError) as caught:
        parse(body)
    assert caught.value.field == "body"
    assert problem in caught.value.problem


def test_idempotency_keys():
    completed = parse(sample("ecommerce_completed.documented"))
    cancelled = parse(sample("ecommerce_cancelled.documented"))
    assert completed.idempotency_key == f"ecommerce.completed:{completed.ecommerce_id}"
    assert cancelled.idempotency_key == f"ecommerce.cancelled:{cancelled.ecommerce_id}"
    refund = sample_data("refund_sent.documented")
    first = parse_data(refund)
    # A redelivery with another daily-id and date spelling is the same refund.
    same = parse_data({**refund, "dailyTransactionID": 2, "date": "2026-11-21 09:15:00"})
    second_partial = parse_data({**refund, "dailyTransactionID": "0003", "date": "2026-11-21 10:00:00.0"})
    assert first.idempotency_key == same.idempotency_key
    assert first.idempotency_key != second_partial.idempotency_key
    assert first.reference_number == second_partial.reference_number
