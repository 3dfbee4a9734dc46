"""``athm find_payment ECOMMERCE_ID [--apply]`` against a fake ATH Móvil on 127.0.0.1: findPayment's answer
beside the stored row, field by field, differences marked; ``--apply`` records only a completion the
database missed, through the processor (its signal and SNS message once); ATH unreachable or answering an
error, and bad input, change nothing and say why; the public token is never printed."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from athm_core import processor
from athm_core.ath.client import FIND_PAYMENT_PATH
from athm_core.models import Notice, OutboxMessage, Payment, WebhookEvent
from athm_core.payloads import parse_data
from tests.conftest import sample_data
from tests.fake_athm import fake_athm_fixture  # noqa: F401

PUBLIC = "pk_find_NEVER_PRINTED_4f3e2d1c"
COMPLETED = sample_data("ecommerce_completed.production")
CHECKOUT = COMPLETED["ecommerceId"]
REFERENCE = COMPLETED["referenceNumber"]


def ath_data(**changes) -> dict:
    """findPayment's ``data`` for the sample checkout, completed (its fields as ATH's answer names them)."""
    data = {
        "ecommerceId": CHECKOUT,
        "ecommerceStatus": "COMPLETED",
        "referenceNumber": REFERENCE,
        "dailyTransactionId": "0008",
        "transactionDate": "2026-11-20 14:07:37",
        "total": 26,
        "subTotal": 24,
        "tax": 2.0,
        "fee": 0.6000000238418579,
        "netAmount": 25.4,
        "totalRefundedAmount": 0,
        "metadata1": "order-1002",
        "metadata2": "tienda-sj",
        "name": "Luis Ortiz",
        "phoneNumber": "7875550102",
        "email": "luis@example.com",
        "items": COMPLETED["items"],
    }
    data.update(changes)
    return data


@pytest.fixture
def ath(fake_athm, settings, transactional_db):
    settings.ATHM_PUBLIC_TOKEN = PUBLIC
    settings.ATHM_OUTBOX = True
    settings.ATHM_SNS_TOPIC_ARN = ""
    return fake_athm


def ath_says(fake, **changes) -> None:
    fake.answer(FIND_PAYMENT_PATH, 200, {"status": "success", "data": ath_data(**changes)})


def find_payment(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("find_payment", *args, stdout=out, stderr=err)
    text = out.getvalue() + err.getvalue()
    assert PUBLIC not in text
    return text


def failed(*args: str) -> str:
    with pytest.raises(CommandError) as raised:
        find_payment(*args)
    assert PUBLIC not in str(raised.value)
    return str(raised.value)


def line(text: str, name: str) -> str:
    return next(each for each in text.splitlines() if each[2:].startswith(name + " "))


def deliver(data: dict) -> WebhookEvent:
    return processor.process(parse_data(data), raw_body=json.dumps(data))


def snapshot() -> list:
    return [
        list(Payment.objects.order_by("pk").values()),
        WebhookEvent.objects.count(),
        Notice.objects.count(),
        OutboxMessage.objects.count(),
    ]


def test_a_recorded_payment_ath_agrees_with_is_shown_field_by_field(ath):
    deliver(COMPLETED)
    payment = Payment.objects.get()
    ath_says(ath)

    text = find_payment(CHECKOUT)

    [request] = ath.requests_to(FIND_PAYMENT_PATH)
    assert request.json == {"ecommerceId": CHECKOUT, "publicToken": PUBLIC}
    assert text.splitlines()[0] == (
        f"findPayment for ecommerceId {CHECKOUT}; this database: payment {payment.pk} (completed)"
    )
    assert line(text, "status").split() == ["status", "COMPLETED", "completed"]
    assert line(text, "total").split() == ["total", "26.00", "26.00"]
    assert line(text, "reference number").split()[2:] == [REFERENCE, REFERENCE]
    assert line(text, "fee").split() == ["fee", "0.60", "0.60"]
    assert line(text, "net amount").split()[2:] == ["25.40", "25.40"]
    assert line(text, "refunded amount").split()[2:] == ["0.00", "0.00"]
    assert "2026-11-20 14:07:37 (Puerto Rico)" in line(text, "date")
    assert line(text, "metadata1").split() == ["metadata1", "order-1002", "order-1002"]
    assert line(text, "metadata2").split() == ["metadata2", "tienda-sj", "tienda-sj"]
    assert not any(each.startswith("*") for each in text.splitlines())
    assert text.splitlines()[-1] == "no differences: ATH Móvil and this database agree"


def test_differences_are_marked_and_never_applied(ath, signal_log):
    deliver(COMPLETED)
    ath_says(ath, totalRefundedAmount="5.00", metadata1="order-9999")
    signal_log.calls.clear()
    before = snapshot()

    text = find_payment(CHECKOUT, "--apply")

    assert line(text, "refunded amount").startswith("* ") and line(text, "metadata1").startswith("* ")
    assert line(text, "total").startswith("  ")
    assert "2 difference(s), marked *: refunded amount, metadata1" in text
    assert text.splitlines()[-1].startswith(
        "nothing applied: ATH Móvil reports it COMPLETED and it is recorded completed: only a completion"
    )
    assert snapshot() == before and signal_log.calls == []


def test_a_completion_never_recorded_is_shown_then_applied_once_through_the_processor(ath, signal_log):
    ath_says(ath)

    text = find_payment(CHECKOUT)
    assert "this database: not recorded here" in text.splitlines()[0]
    assert line(text, "total").split() == ["total", "26.00", "-"]
    assert not any(each.startswith("*") for each in text.splitlines())  # nothing recorded to differ
    assert text.splitlines()[-1] == (
        f"ATH Móvil reports a completion this database never recorded: athm find_payment {CHECKOUT} --apply "
        "records it"
    )
    assert not Payment.objects.exists()

    text = find_payment(CHECKOUT, "--apply")

    payment = Payment.objects.get()
    record = WebhookEvent.objects.get()
    assert text.splitlines()[-1] == (
        f"applied: payment {payment.pk} recorded completed from ATH Móvil's answer "
        f"(webhook event {record.pk}); announced once (its signal, and SNS message if the outbox is on)"
    )
    assert (record.outcome, record.request_id, record.event_type) == (
        "applied",
        "find_payment",
        "ecommerce.completed",
    )
    assert (payment.status, payment.ecommerce_id, payment.reference_number) == (
        "completed",
        CHECKOUT,
        REFERENCE,
    )
    assert (payment.total, payment.fee, payment.net_amount) == (
        Decimal("26.00"),
        Decimal("0.60"),
        Decimal("25.40"),
    )
    assert (payment.metadata_1, payment.name) == ("order-1002", "Luis Ortiz")
    assert payment.verified_at is not None
    assert signal_log.names() == ["payment_completed"]
    assert json.loads(OutboxMessage.objects.get().body)["type"] == "payment_completed"

    # Again: nothing left to apply; and ATH's own webhook, arriving late, is a duplicate.
    text = find_payment(CHECKOUT, "--apply")
    assert text.splitlines()[-1] == "nothing applied: ATH Móvil and this database agree"
    assert deliver(COMPLETED).outcome == "duplicate"
    assert signal_log.names() == ["payment_completed"] and OutboxMessage.objects.count() == 1


def test_an_open_payment_ath_reports_completed_is_completed_through_the_processor(ath, signal_log):
    open_payment = Payment.objects.create(
        transaction_type=Payment.TransactionType.ECOMMERCE, ecommerce_id=CHECKOUT, total=Decimal("26.00")
    )
    ath_says(ath)

    text = find_payment(CHECKOUT, "--apply")

    assert line(text, "status").split() == ["*", "status", "COMPLETED", "open"]
    assert line(text, "reference number").startswith("* ")
    payment = Payment.objects.get()
    assert payment.pk == open_payment.pk and payment.status == "completed"
    assert payment.reference_number == REFERENCE
    assert signal_log.names() == ["payment_completed"] and OutboxMessage.objects.count() == 1
    assert text.splitlines()[-1].startswith(f"applied: payment {payment.pk} recorded completed")


@pytest.mark.parametrize(
    "status, recorded",
    [("CANCEL", None), ("OPEN", None), ("CONFIRM", None), ("CANCEL", "open")],
)
def test_nothing_but_a_missed_completion_is_applied(ath, signal_log, status, recorded):
    if recorded:
        Payment.objects.create(
            transaction_type="ecommerce", ecommerce_id=CHECKOUT, total=Decimal("26.00"), status=recorded
        )
    ath_says(ath, ecommerceStatus=status)
    before = snapshot()

    text = find_payment(CHECKOUT, "--apply")

    assert text.splitlines()[-1].startswith("nothing applied: ATH Móvil reports it ")
    assert snapshot() == before and signal_log.calls == []
    if recorded:
        assert line(text, "status").split() == ["*", "status", status, recorded]


@pytest.mark.parametrize("recorded", ["cancelled", "expired"])
def test_a_completion_wins_over_a_cancellation_recorded_here(ath, signal_log, recorded):
    """As with ATH's own late webhook: money moved, so ATH's completion is recorded and announced."""
    Payment.objects.create(
        transaction_type="ecommerce", ecommerce_id=CHECKOUT, total=Decimal("26.00"), status=recorded
    )
    ath_says(ath)

    text = find_payment(CHECKOUT, "--apply")

    assert text.splitlines()[-1].startswith("applied: payment ")
    assert Payment.objects.get().status == "completed"
    assert signal_log.names() == ["payment_completed"]


def test_a_completion_otherwise_than_the_open_checkout_asked_is_flagged(ath, signal_log):
    """ATH's answer is what moved, so it is recorded; the open checkout the business wrote asked for
    another total and order, so the payment is flagged."""
    Payment.objects.create(
        transaction_type="ecommerce", ecommerce_id=CHECKOUT, total=Decimal("26.00"), metadata_1="order-1002"
    )
    ath_says(
        ath,
        total="1.00",
        subTotal="1.00",
        tax=0,
        fee="0.03",
        netAmount="0.97",
        metadata1="order-9999",
        items=[],
    )

    find_payment(CHECKOUT, "--apply")

    payment = Payment.objects.get()
    assert (payment.status, payment.total, payment.metadata_1) == ("completed", Decimal("1.00"), "order-9999")
    [anomaly] = payment.anomalies
    assert anomaly["kind"] == "completed_otherwise_than_asked"
    assert "26.00" in anomaly["detail"] and "order-1002" in anomaly["detail"]


def test_an_open_payment_beside_its_completion_recorded_without_its_ecommerce_id(ath, signal_log):
    """The completion came in ATH's published shape (no ecommerceId): the lookup shows that payment, and
    --apply has nothing to record, however often it is run."""
    completed = deliver({k: v for k, v in COMPLETED.items() if k != "ecommerceId"}).payment
    Payment.objects.create(transaction_type="ecommerce", ecommerce_id=CHECKOUT, total=Decimal("26.00"))
    ath_says(ath)

    text = find_payment(CHECKOUT)
    find_payment(CHECKOUT, "--apply")
    find_payment(CHECKOUT, "--apply")

    assert f"payment {completed.pk} (completed)" in text.splitlines()[0]
    assert "--apply records it" not in text
    assert WebhookEvent.objects.count() == 1
    assert signal_log.names() == ["payment_completed"]


@pytest.mark.parametrize(
    "changes",
    [
        {"items": [{"name": "Pastelillo", "quantity": 2, "price": "$12.00"}]},
        {"dailyTransactionId": "N/A"},
        {"transactionDate": "yesterday"},
    ],
)
def test_an_answer_with_a_field_that_cannot_be_read_is_still_applied(ath, signal_log, changes):
    """A field that names no money and cannot be read is left out, as the verifier does: the completion
    is still recorded and announced."""
    ath_says(ath, **changes)

    text = find_payment(CHECKOUT, "--apply")

    assert text.splitlines()[-1].startswith("applied:"), text
    assert Payment.objects.get().total == Decimal("26.00")
    assert signal_log.names() == ["payment_completed"]


def test_a_payment_not_recorded_here_is_not_called_agreement(ath):
    ath_says(ath)
    text = find_payment(CHECKOUT)
    assert "agree" not in text
    assert "not recorded here" in text.splitlines()[-2]


def test_an_expired_payment_agrees_with_ath_s_cancel(ath):
    Payment.objects.create(transaction_type="ecommerce", ecommerce_id=CHECKOUT, total=26, status="expired")
    ath_says(
        ath, ecommerceStatus="CANCEL", referenceNumber="", fee=None, netAmount=None, totalRefundedAmount=None
    )
    text = find_payment(CHECKOUT)
    assert line(text, "status").split() == ["status", "CANCEL", "expired"]


def test_a_payment_recorded_without_its_ecommerce_id_is_found_by_reference_number(ath):
    legacy = {key: value for key, value in COMPLETED.items() if key != "ecommerceId"}
    deliver(legacy)
    ath_says(ath)
    text = find_payment(CHECKOUT, "--apply")
    assert f"this database: payment {Payment.objects.get().pk} (completed)" in text
    assert Payment.objects.count() == 1 and WebhookEvent.objects.count() == 1


@pytest.mark.parametrize(
    "status, body, expected",
    [
        (
            400,
            {
                "status": "error",
                "message": "ecommerceId does not exist",
                "errorcode": "BTRA_0031",
                "data": None,
            },
            f"ATH Móvil knows no payment with ecommerceId {CHECKOUT} (BTRA_0031); nothing was changed",
        ),
        (
            400,
            {"status": "error", "message": f"token {PUBLIC} is invalid", "errorcode": "BTRA_0001"},
            "ATH Móvil could not be asked, nothing was changed: ATH Móvil: token ******** is invalid "
            "(HTTP 400, BTRA_0001)",
        ),
        (
            503,
            None,
            "ATH Móvil could not be asked, nothing was changed: ATH Móvil: an error answer without a body",
        ),
        (
            200,
            {"status": "success", "data": None},
            "names no payment (no ecommerceStatus); nothing was changed",
        ),
    ],
    ids=["unknown-id", "btra-error-quoting-the-token", "unavailable", "no-payment"],
)
def test_ath_errors_say_why_and_change_nothing(ath, signal_log, caplog, status, body, expected):
    Payment.objects.create(transaction_type="ecommerce", ecommerce_id=CHECKOUT, total=26)
    if body is None:
        ath.answer(FIND_PAYMENT_PATH, status, raw=b"")
    else:
        ath.answer(FIND_PAYMENT_PATH, status, body)
    before = snapshot()
    caplog.set_level("DEBUG")
    assert expected in failed(CHECKOUT, "--apply")
    assert snapshot() == before and signal_log.calls == []
    assert PUBLIC not in caplog.text


def test_an_unreachable_ath_says_so_and_changes_nothing(settings, transactional_db):
    settings.ATHM_PUBLIC_TOKEN = PUBLIC
    settings.ATHM_PAYMENTS_API_BASE_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
    message = failed(CHECKOUT, "--apply")
    assert message.startswith("ATH Móvil could not be asked, nothing was changed: ATH Móvil: cannot reach ")
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize("value", ["", "   ", "two words", "x" * 101, "tab\there"])
def test_an_ecommerce_id_that_cannot_be_one_is_refused_before_asking(ath, value):
    message = failed(value)
    assert message in ("an ecommerceId is required", f"not an ecommerceId: {value.strip()[:100]!r}")
    assert ath.requests == []


def test_without_a_public_token_it_says_what_to_set(ath, settings):
    settings.ATHM_PUBLIC_TOKEN = ""
    assert "findPayment needs ATHM_PUBLIC_TOKEN" in failed(CHECKOUT)
    assert ath.requests == []
