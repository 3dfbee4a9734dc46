"""Money that cannot be right is recorded as ATH Móvil sent it (it moved at ATH) and flagged, never hidden:
over-refunds, refunds of payments that never completed, a second delivery of a transaction with another total
or reference, zero totals, fees above totals. Each is on the delivery and the payment (``anomalies``), in the
webhook's answer, in the ``WebhookAnomalies`` metric, in the admin ("has anomalies") and in the SNS message.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from athm_core.models import OutboxMessage, Payment, WebhookEvent
from tests.conftest import sample_data
from tests.test_hostile import metrics_emitted


@pytest.fixture(autouse=True)
def outbox_on(settings) -> None:
    settings.ATHM_VERIFY = False
    settings.ATHM_OUTBOX = True
    settings.ATHM_SNS_TOPIC_ARN = ""


COMPLETED = sample_data("ecommerce_completed.production")  # total 26.00
REFUND = {**sample_data("refund_sent.production"), "referenceNumber": COMPLETED["referenceNumber"]}


def post(lambda_handler, data: dict[str, Any]):
    return lambda_handler.post(json.dumps(data))


def kinds(rows) -> list[str]:
    return [anomaly["kind"] for anomaly in rows]


def test_a_refund_of_500_on_a_26_payment_is_recorded_and_flagged_as_an_over_refund(
    lambda_handler, signal_log, capsys
):
    post(lambda_handler, COMPLETED)
    capsys.readouterr()
    response = post(lambda_handler, {**REFUND, "total": "500.00"})
    assert response.status == 200 and response.json()["outcome"] == "applied", response
    assert response.json()["anomalies"] == ["over_refund"]
    payment = Payment.objects.get()
    # Nothing is left to refund (never a negative amount); the anomaly says by how much it went over.
    assert payment.total_refunded_amount == Decimal("500.00") and payment.refundable_amount == Decimal("0.00")
    assert (
        kinds(payment.anomalies) == ["over_refund"] and "refundable -474.00" in payment.anomalies[0]["detail"]
    )
    assert kinds(WebhookEvent.objects.get(pk=response.json()["event_id"]).anomalies) == ["over_refund"]
    assert signal_log.names() == ["payment_completed", "refund_sent"]  # money moved at ATH: announced
    assert "WebhookAnomalies" in metrics_emitted(capsys)


def test_refunds_summing_past_the_total_are_flagged_at_the_one_that_passes_it(lambda_handler):
    post(lambda_handler, COMPLETED)
    first = post(lambda_handler, {**REFUND, "total": "20.00", "dailyTransactionID": "1"})
    second = post(lambda_handler, {**REFUND, "total": "10.00", "dailyTransactionID": "2"})
    assert first.json()["anomalies"] == [] and second.json()["anomalies"] == ["over_refund"]
    payment = Payment.objects.get()
    assert payment.total_refunded_amount == Decimal("30.00") and payment.refundable_amount == Decimal("0.00")


def test_a_refund_that_waited_for_its_payment_is_flagged_when_linked(lambda_handler, signal_log):
    post(lambda_handler, {**REFUND, "total": "30.00"})
    post(lambda_handler, COMPLETED)
    assert kinds(Payment.objects.get().anomalies) == ["over_refund"]
    assert signal_log.names() == ["payment_completed", "refund_sent"]


def test_a_refund_of_a_payment_that_never_completed_is_flagged(lambda_handler):
    cancelled = {**sample_data("ecommerce_cancelled.production"), "referenceNumber": "215070999-cancelled"}
    post(lambda_handler, cancelled)
    response = post(lambda_handler, {**REFUND, "referenceNumber": "215070999-cancelled", "total": "5.00"})
    assert response.json()["anomalies"] == ["refund_of_uncompleted_payment"]


@pytest.mark.parametrize(
    "changes", [{"total": "30.00"}, {"referenceNumber": "215070444-another"}], ids=["total", "reference"]
)
def test_a_second_completion_with_another_total_or_reference_is_a_flagged_duplicate(
    lambda_handler, signal_log, changes
):
    post(lambda_handler, COMPLETED)
    response = post(lambda_handler, {**COMPLETED, **changes})
    assert response.json()["outcome"] == "duplicate" and response.json()["anomalies"] == [
        "conflicting_redelivery"
    ]
    payment = Payment.objects.get()
    assert payment.total == Decimal("26.00") and kinds(payment.anomalies) == ["conflicting_redelivery"]
    assert signal_log.names() == ["payment_completed"]
    # An exact redelivery is no anomaly.
    assert post(lambda_handler, COMPLETED).json()["anomalies"] == []


def test_an_app_payment_delivered_again_with_another_total_is_flagged(lambda_handler):
    post(lambda_handler, sample_data("payment_received"))
    again = post(lambda_handler, {**sample_data("payment_received"), "total": "1.00"})
    assert again.json()["anomalies"] == ["conflicting_redelivery"]


@pytest.mark.parametrize(
    "changes, kind",
    [
        ({"total": 0, "subTotal": 0, "tax": 0, "fee": 0, "netAmount": 0}, "zero_total"),
        ({"fee": "30.00"}, "fee_above_total"),
    ],
)
def test_a_zero_total_or_a_fee_above_the_total_is_recorded_and_flagged(
    lambda_handler, signal_log, changes, kind
):
    response = post(lambda_handler, {**COMPLETED, **changes})
    assert response.json()["outcome"] == "applied" and response.json()["anomalies"] == [kind]
    assert kinds(Payment.objects.get().anomalies) == [kind]
    assert signal_log.names() == ["payment_completed"]


def test_the_sns_message_carries_the_anomalies_and_keeps_to_the_schema(lambda_handler, event_schema):
    post(lambda_handler, COMPLETED)
    post(lambda_handler, {**REFUND, "total": "500.00"})
    message = json.loads(OutboxMessage.objects.order_by("pk").last().body)
    event_schema.validate(message)
    assert [anomaly["kind"] for anomaly in message["payment"]["anomalies"]] == ["over_refund"]
    first = json.loads(OutboxMessage.objects.order_by("pk").first().body)
    event_schema.validate(first)
    assert first["payment"]["anomalies"] == []
    # A compatible change: the revision says so, the version (which subscriptions filter on) stays 1, and a
    # message from before (no revision, no anomalies) still keeps to the schema.
    assert (message["schema_version"], message["schema_revision"]) == (1, 1)
    older = {key: value for key, value in first.items() if key != "schema_revision"}
    older["payment"] = {key: value for key, value in first["payment"].items() if key != "anomalies"}
    event_schema.validate(older)


ADMIN_SCRIPT = """
import json
from django.contrib.auth.models import User
from django.test import Client
from athm_core.models import Payment, WebhookEvent
from athm_core.receive import receive
receive(json.dumps(COMPLETED).encode())
flagged = receive(json.dumps(REFUND).encode()).record
User.objects.create_superuser("admin", "admin@example.com", "pw")
client = Client()
client.force_login(User.objects.get())
events = client.get("/admin/athm_core/webhookevent/?has_anomalies=yes").content.decode()
payments = client.get("/admin/athm_core/payment/?has_anomalies=yes").content.decode()
page = client.get(f"/admin/athm_core/webhookevent/{flagged.pk}/change/").content.decode()
waiting = WebhookEvent.objects.create(
    received_at=flagged.received_at, outcome="pending", raw_body="{}", verify_after=flagged.received_at
)
settled = WebhookEvent.objects.create(
    received_at=flagged.received_at, outcome="pending", raw_body="{}", settled_by=flagged
)
still = client.get("/admin/athm_core/webhookevent/?verification=waiting").content.decode()
done = client.get("/admin/athm_core/webhookevent/?verification=settled").content.decode()
print(json.dumps({
    "events": events.count("/change/") and f"/{flagged.pk}/change/" in events,
    "payment": f"/{Payment.objects.get().pk}/change/" in payments,
    "page": "over_refund" in page,
    "waiting": f"/{waiting.pk}/change/" in still and f"/{settled.pk}/change/" not in still,
    "settled": f"/{settled.pk}/change/" in done and f"/{waiting.pk}/change/" not in done,
}))
"""


@pytest.mark.django_db(transaction=True)
def test_the_admin_lists_the_flagged_deliveries_and_payments(child_env, tmp_path):
    from tests.test_admin_notices import run_with_the_admin

    script = f"COMPLETED = {COMPLETED!r}\nREFUND = {dict(REFUND, total='500.00')!r}\n" + ADMIN_SCRIPT
    result = run_with_the_admin(script, child_env, tmp_path)
    assert result == {"events": True, "payment": True, "page": True, "waiting": True, "settled": True}


def test_an_anomaly_found_when_a_waiting_refund_is_linked_is_answered_and_counted(lambda_handler, capsys):
    post(lambda_handler, {**REFUND, "total": "30.00"})
    capsys.readouterr()
    response = post(lambda_handler, COMPLETED)
    assert response.json()["anomalies"] == ["over_refund"]
    assert "WebhookAnomalies" in metrics_emitted(capsys)


def relay_metrics(capsys) -> list[str]:
    """One run of the relay's Lambda entry point; the metric names it emitted."""
    from handler import relay
    from handler.local import invoke

    capsys.readouterr()
    invoke(relay.lambda_handler, {})
    return metrics_emitted(capsys)


def test_an_anomaly_the_relay_finds_when_it_links_a_waiting_refund_is_counted(
    lambda_handler, monkeypatch, capsys
):
    from athm_core import processor, replay

    post(lambda_handler, {**REFUND, "total": "30.00"})
    # The payment's delivery dies after its commit, before it ties the refund: the relay's sweep does.
    monkeypatch.setattr(processor, "_link_waiting_refunds", lambda *args: ([], [], []))
    post(lambda_handler, COMPLETED)
    monkeypatch.undo()
    assert kinds(Payment.objects.get().anomalies) == []
    assert "WebhookAnomalies" in relay_metrics(capsys)
    assert kinds(Payment.objects.get().anomalies) == ["over_refund"]
    post(lambda_handler, {**REFUND, "total": "1.00", "date": "2026-11-29 10:00:00"})
    monkeypatch.setattr(processor, "_link_waiting_refunds", lambda *args: ([], [], []))
    assert replay.finish_pending().anomalies == 0  # nothing linked by the sweep: nothing counted
