"""The Lambda handler end to end: API Gateway event in, rows and signals, status code and JSON out."""

import base64
import json
from decimal import Decimal

import pytest
from django.db import OperationalError

from athm_core.models import Payment, Refund, WebhookEvent
from tests.conftest import SAMPLES, SECRET, sample, sample_data

# Business outcome of the first delivery of each sample, on an empty database.
FIRST_DELIVERY = {
    "ecommerce_completed.documented": ("applied", Payment.Status.COMPLETED, "payment_completed"),
    "ecommerce_completed.production": ("applied", Payment.Status.COMPLETED, "payment_completed"),
    "ecommerce_cancelled.documented": ("applied", Payment.Status.CANCELLED, "payment_cancelled"),
    "ecommerce_cancelled.production": ("applied", Payment.Status.CANCELLED, "payment_cancelled"),
    "ecommerce_expired": ("applied", Payment.Status.EXPIRED, "payment_expired"),
    "payment_received": ("applied", Payment.Status.COMPLETED, "payment_received"),
    "donation_received": ("applied", Payment.Status.COMPLETED, "donation_received"),
    "refund_sent.documented": ("applied", None, None),
    "refund_sent.production": ("applied", None, None),
    "simulated": ("simulated", None, None),
    "ecommerce_completed.legacy": ("applied", Payment.Status.COMPLETED, "payment_completed"),
    "ecommerce_cancelled.legacy": ("applied", Payment.Status.CANCELLED, "payment_cancelled"),
    "ecommerce_expired.legacy": ("applied", Payment.Status.EXPIRED, "payment_expired"),
}


def business_rows() -> tuple[int, int]:
    return Payment.objects.count(), Refund.objects.count()


@pytest.mark.parametrize("name", sorted(FIRST_DELIVERY))
@pytest.mark.parametrize("api", ["http", "rest"])
def test_every_sample_shape_through_the_handler(lambda_handler, signal_log, name, api):
    outcome, status, signal = FIRST_DELIVERY[name]
    response = lambda_handler.post(sample(name), rest=api == "rest")
    assert response.status == 200, response
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["accepted"] is True and answer["outcome"] == outcome and answer["duplicate"] is False
    record = WebhookEvent.objects.get(pk=answer["event_id"])
    assert record.raw_body == sample(name)
    assert record.outcome == outcome
    if status is not None:
        assert Payment.objects.get().status == status
    assert signal_log.names() == ([signal] if signal else [])

    again = lambda_handler.post(sample(name), rest=api == "rest").json()
    assert again["outcome"] == ("simulated" if name == "simulated" else "duplicate")
    assert again["duplicate"] is (name != "simulated")
    assert signal_log.names() == ([signal] if signal else [])


def test_samples_cover_every_shape():
    assert {path.stem for path in SAMPLES.glob("*.json")} == set(FIRST_DELIVERY)


def test_a_whole_checkout_story(lambda_handler, signal_log):
    """Refund first, then the payment (twice), a late cancel, and a second partial refund."""
    refund_first = sample_data("refund_sent.production")
    refund_first["total"] = "6.00"
    assert lambda_handler.post(json.dumps(refund_first)).json()["outcome"] == "applied"
    assert lambda_handler.post(sample("ecommerce_completed.production")).json()["outcome"] == "applied"
    assert lambda_handler.post(sample("ecommerce_completed.production")).json()["duplicate"] is True
    late_cancel = sample_data("ecommerce_cancelled.production")
    late_cancel["ecommerceId"] = sample_data("ecommerce_completed.production")["ecommerceId"]
    assert lambda_handler.post(json.dumps(late_cancel)).json()["outcome"] == "ignored"
    second = {**refund_first, "total": "4.00", "dailyTransactionID": "4", "date": "2026-11-21 11:00:00"}
    assert lambda_handler.post(json.dumps(second)).json()["outcome"] == "applied"

    payment = Payment.objects.get()
    assert payment.status == Payment.Status.COMPLETED
    assert payment.total == Decimal("26.00") and payment.fee == Decimal("0.60")
    assert payment.total_refunded_amount == Decimal("10.00")
    assert signal_log.names() == ["payment_completed", "refund_sent", "refund_sent"]
    assert WebhookEvent.objects.count() == 5


def test_source_ip_comes_from_the_request_context_never_from_x_forwarded_for(lambda_handler):
    spoofed = {"X-Forwarded-For": "6.6.6.6", "X-Real-Ip": "6.6.6.6"}
    http = lambda_handler.post(sample("simulated"), source_ip="203.0.113.5", headers=spoofed)
    rest = lambda_handler.post(sample("simulated"), rest=True, source_ip="198.51.100.7", headers=spoofed)
    assert WebhookEvent.objects.get(pk=http.json()["event_id"]).source_ip == "203.0.113.5"
    assert WebhookEvent.objects.get(pk=rest.json()["event_id"]).source_ip == "198.51.100.7"


def test_the_api_gateway_request_id_is_kept(lambda_handler):
    response = lambda_handler.post(sample("simulated"), request_id="Abc123-request")
    assert WebhookEvent.objects.get(pk=response.json()["event_id"]).request_id == "Abc123-request"


def test_base64_encoded_body(lambda_handler):
    from handler.local import http_api_event

    event = http_api_event("POST", f"/webhook/{SECRET}", body=sample("payment_received"))
    event["body"] = base64.b64encode(sample("payment_received").encode()).decode()
    event["isBase64Encoded"] = True
    response = lambda_handler(event)
    assert response["statusCode"] == 200
    assert Payment.objects.get().reference_number == sample_data("payment_received")["referenceNumber"]


def test_any_accepted_secret_works_during_a_rotation(lambda_handler):
    from django.conf import settings

    for secret in settings.ATHM_WEBHOOK_SECRET.split(","):
        assert lambda_handler.post(sample("simulated"), secret=secret).status == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/webhook/wrong-secret"),
        ("POST", f"/webhook/{SECRET}x"),
        ("POST", f"/webhook/{SECRET[:-1]}"),
        ("POST", f"/webhook/{SECRET}/"),
        ("POST", "/webhook/"),
        ("POST", "/webhook"),
        ("GET", "/webhook/wrong-secret"),
        ("POST", "/"),
        ("GET", "/admin/"),
        ("POST", f"/other/{SECRET}"),
    ],
)
def test_wrong_secret_or_path_is_404_with_no_database_write(
    lambda_handler, django_assert_num_queries, method, path
):
    from handler.local import http_api_event

    with django_assert_num_queries(0):
        # Counted on this thread; the rows below prove the worker thread wrote nothing either.
        response = lambda_handler(http_api_event(method, path, body=sample("ecommerce_completed.documented")))
    assert response["statusCode"] == 404
    assert json.loads(response["body"])["error"] == "not_found"
    assert WebhookEvent.objects.count() == 0 and business_rows() == (0, 0)


def test_wrong_secret_opens_no_database_connection(lambda_handler):
    from django.db.backends.signals import connection_created

    lambda_handler.app.application.close_connections()
    opened = []

    def record(sender, connection, **kwargs):
        opened.append(connection.alias)

    connection_created.connect(record)
    try:
        assert lambda_handler.post(sample("simulated"), secret="nope").status == 404
        assert lambda_handler.get("/nowhere").status == 404
    finally:
        connection_created.disconnect(record)
    assert opened == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("{not json", "body: is not valid JSON"),
        ("[]", "body: must be a JSON object"),
        (json.dumps({**sample_data("payment_received"), "total": "-5.00"}), "total: must not be negative"),
        (
            json.dumps({**sample_data("payment_received"), "transactionType": "wire"}),
            "transactionType: unknown",
        ),
        (
            json.dumps({**sample_data("ecommerce_completed.production"), "referenceNumber": ""}),
            "referenceNumber: is required",
        ),
        (
            json.dumps({**sample_data("refund_sent.production"), "total": "1.001"}),
            "total: has more than two decimals",
        ),
        ('{"total": Infinity}', "body: Infinity is not a number"),
        (b"\xc3\x28", "body: is not valid JSON"),  # the bad byte replaced, then read as JSON
    ],
)
def test_invalid_payload_is_400_naming_the_problem_and_writes_no_business_row(
    lambda_handler, signal_log, body, problem
):
    response = lambda_handler.post(body)
    assert response.status == 400
    answer = response.json()
    assert answer["error"] == "invalid_payload"
    assert answer["detail"].startswith(problem)
    assert business_rows() == (0, 0)
    assert signal_log.calls == []
    # The delivery is kept, with the reason, for a look and a replay.
    record = WebhookEvent.objects.get(pk=answer["event_id"])
    assert record.outcome == "invalid" and record.error.startswith(problem)


def test_get_on_the_webhook_is_405(lambda_handler):
    response = lambda_handler.get(f"/webhook/{SECRET}")
    assert response.status == 405 and response.headers["allow"] == "POST"
    assert WebhookEvent.objects.count() == 0


def test_body_over_the_limit_is_413_and_writes_nothing(lambda_handler, settings):
    settings.ATHM_MAX_BODY_BYTES = 1024
    data = sample_data("payment_received")
    data["message"] = "x" * 900
    response = lambda_handler.post(json.dumps(data))
    assert response.status == 413
    assert "limit is 1024" in response.json()["detail"]
    assert WebhookEvent.objects.count() == 0 and business_rows() == (0, 0)


@pytest.mark.parametrize("size", [70_000, 3_000_000])
def test_body_over_the_default_limit_is_413(lambda_handler, size):
    data = sample_data("payment_received")
    data["message"] = "x" * size
    response = lambda_handler.post(json.dumps(data))
    assert response.status == 413
    assert "the limit is 65536" in response.json()["detail"]
    assert WebhookEvent.objects.count() == 0


def test_health(lambda_handler):
    response = lambda_handler.get("/health")
    assert response.status == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_database_failure_mid_transaction_is_503_and_leaves_nothing_half_written(
    lambda_handler, signal_log, monkeypatch
):
    """The payment row is written, then the database fails: all of it rolls back, and the redelivery
    completes the job."""
    original_create = WebhookEvent.objects.create

    def failing_create(**kwargs):
        if kwargs.get("outcome") == "applied":
            raise OperationalError("server closed the connection unexpectedly")
        return original_create(**kwargs)

    monkeypatch.setattr(WebhookEvent.objects, "create", failing_create)
    response = lambda_handler.post(sample("ecommerce_completed.documented"))
    assert response.status == 503
    assert response.json()["error"] == "database_unavailable"
    assert business_rows() == (0, 0) and WebhookEvent.objects.count() == 0
    assert signal_log.calls == []

    monkeypatch.undo()
    assert lambda_handler.post(sample("ecommerce_completed.documented")).json()["outcome"] == "applied"
    assert Payment.objects.get().status == Payment.Status.COMPLETED
    assert signal_log.names() == ["payment_completed"]


def test_a_bug_in_processing_is_500_and_the_delivery_is_kept_with_its_traceback(lambda_handler, monkeypatch):
    from athm_core import processor
    from athm_core.events import EventType

    def broken(event):
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(processor._TRANSITIONS, EventType.PAYMENT_RECEIVED, broken)
    response = lambda_handler.post(sample("payment_received"))
    assert response.status == 500
    record = WebhookEvent.objects.get(pk=response.json()["event_id"])
    assert record.outcome == "failed" and "ZeroDivisionError: a bug" in record.error
    assert record.raw_body == sample("payment_received")
    assert business_rows() == (0, 0)


@pytest.mark.django_db(transaction=True)
def test_the_webhook_is_exempt_from_the_admins_csrf_check(settings):
    """With the admin on (``ATHM_ADMIN=1``, ``make serve``'s default) its CsrfViewMiddleware runs for
    every view; ATH Móvil posts without a CSRF token, so the webhook must not be checked (it was: 403)."""
    from django.test import Client

    settings.MIDDLEWARE = ["django.middleware.csrf.CsrfViewMiddleware"]
    response = Client(enforce_csrf_checks=True).post(
        f"/webhook/{SECRET}", sample("ecommerce_completed.production"), content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["outcome"] == "applied"
