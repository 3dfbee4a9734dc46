"""Unverifiable now is not lost: a delivery ATH Móvil cannot be asked about is kept ``pending``, answered 503,
and verified again by the relay until ATH answers; then it is applied once (or rejected), with its signals.

Against the fake ATH Móvil on 127.0.0.1 (tests/fake_athm.py), which answers findPayment as each test says:
slow, down, an error, 403 as ATH does for calls from outside Puerto Rico, or the real answer.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from athm_core import replay
from athm_core.ath.client import FIND_PAYMENT_PATH
from athm_core.models import Payment, WebhookEvent
from tests.conftest import sample_data
from tests.fake_athm import fake_athm_fixture  # noqa: F401
from tests.test_verification import (
    COMPLETED,
    ath_fixture,  # noqa: F401 - the `ath` fixture
    ath_says,
    closed_port,
)

Outcome = WebhookEvent.Outcome
BODY = json.dumps(COMPLETED)


def ath_is_down(ath, settings, how: str = "down") -> None:
    if how == "down":
        settings.ATHM_PAYMENTS_API_BASE_URL = f"http://127.0.0.1:{closed_port()}"
    elif how == "outside Puerto Rico":
        ath.answer(FIND_PAYMENT_PATH, 403, raw=b"<html><h1>403 Forbidden</h1></html>")
    elif how == "slow":
        ath.answer(FIND_PAYMENT_PATH, 200, {"status": "success", "data": {}}, delay=3)
    else:
        ath.answer(FIND_PAYMENT_PATH, 502, raw=b"Bad Gateway")


def ath_is_back(ath, settings, **answer) -> None:
    settings.ATHM_PAYMENTS_API_BASE_URL = ath.base_url
    ath_says(ath, **answer)


@pytest.mark.parametrize("how", ["down", "outside Puerto Rico", "slow", "an error"])
def test_a_delivery_ath_cannot_verify_is_kept_pending_and_applied_once_when_ath_answers(
    lambda_handler, ath, settings, signal_log, how
):
    ath_is_down(ath, settings, how)
    response = lambda_handler.post(BODY)
    assert response.status == 503, response
    answer = response.json()
    assert answer["error"] == "verification_pending"
    pending = WebhookEvent.objects.get(pk=answer["event_id"])
    assert pending.outcome == Outcome.PENDING and pending.body_bytes == BODY.encode()
    assert pending.verify_after > timezone.now() and pending.settled_by is None
    assert not Payment.objects.exists() and signal_log.names() == []

    # The relay, while ATH is still unreachable: nothing applied, the next try booked later.
    report = replay.finish_pending(retry_now=True).verification
    assert report["still_pending"] == 1 and report["pending"] == 1
    pending.refresh_from_db()
    assert pending.verification_attempts == 1 and pending.verify_after > timezone.now() + timedelta(
        seconds=90
    )
    assert not Payment.objects.exists() and signal_log.names() == []

    # ATH answers again: applied once, its signal once, the pending delivery settled by the one that did it.
    ath_is_back(ath, settings)
    report = replay.finish_pending(retry_now=True).verification
    assert report["settled"] == {"applied": 1} and report["pending"] == 0
    assert Payment.objects.get().status == "completed"
    assert signal_log.names() == ["payment_completed"]
    pending.refresh_from_db()
    assert pending.settled_by.outcome == Outcome.APPLIED and pending.verify_after is None
    assert pending.settled_by.request_id == f"verification of #{pending.pk}"

    # Nothing left: another run does nothing.
    assert replay.finish_pending(retry_now=True).verification["settled"] == {}
    assert Payment.objects.count() == 1 and signal_log.names() == ["payment_completed"]


def test_a_pending_delivery_is_not_asked_again_before_its_time(lambda_handler, ath, settings):
    ath_is_down(ath, settings)
    lambda_handler.post(BODY)
    ath_is_back(ath, settings)
    assert replay.finish_pending().verification["settled"] == {}  # due in a minute
    WebhookEvent.objects.update(verify_after=timezone.now() - timedelta(seconds=1))
    assert replay.finish_pending().verification["settled"] == {"applied": 1}


def test_several_pending_deliveries_of_one_event_apply_it_once(lambda_handler, ath, settings, signal_log):
    ath_is_down(ath, settings)
    assert lambda_handler.post(BODY).status == 503
    assert lambda_handler.post(BODY).status == 503  # ATH Móvil, or a proxy, delivered it again
    ath_is_back(ath, settings)
    report = replay.finish_pending(retry_now=True).verification
    assert report["settled"] == {"applied": 1, "duplicate": 1}
    assert Payment.objects.count() == 1 and signal_log.names() == ["payment_completed"]


def test_a_redelivery_after_ath_is_back_applies_it_and_the_relay_settles_the_pending_one(
    lambda_handler, ath, settings, signal_log
):
    ath_is_down(ath, settings)
    lambda_handler.post(BODY)
    ath_is_back(ath, settings)
    assert lambda_handler.post(BODY).json()["outcome"] == "applied"
    assert replay.finish_pending(retry_now=True).verification["settled"] == {"duplicate": 1}
    assert signal_log.names() == ["payment_completed"]


def test_ath_contradicting_the_pending_delivery_rejects_it(lambda_handler, ath, settings, signal_log):
    ath_is_down(ath, settings)
    lambda_handler.post(BODY)
    ath_is_back(ath, settings, total="2.60")
    assert replay.finish_pending(retry_now=True).verification["settled"] == {"rejected": 1}
    assert not Payment.objects.exists() and signal_log.names() == []


def test_by_default_a_pending_delivery_is_never_applied_without_ath(
    lambda_handler, ath, settings, signal_log
):
    ath_is_down(ath, settings)
    lambda_handler.post(BODY)
    WebhookEvent.objects.update(received_at=timezone.now() - timedelta(days=30))
    replay.finish_pending(retry_now=True)
    assert not Payment.objects.exists() and WebhookEvent.objects.get().outcome == Outcome.PENDING


def test_a_merchant_may_apply_unverified_after_a_deadline_and_it_says_so(
    lambda_handler, ath, settings, signal_log
):
    settings.ATHM_APPLY_UNVERIFIED_AFTER = 900
    ath_is_down(ath, settings)
    lambda_handler.post(BODY)
    assert replay.finish_pending(retry_now=True).verification["still_pending"] == 1  # not yet
    WebhookEvent.objects.update(received_at=timezone.now() - timedelta(seconds=901))
    report = replay.finish_pending(retry_now=True).verification
    assert report["applied_unverified"] == 1 and report["settled"] == {"applied": 1}
    assert Payment.objects.get().status == "completed" and signal_log.names() == ["payment_completed"]
    applied = WebhookEvent.objects.get(outcome=Outcome.APPLIED)
    assert [warning["field"] for warning in applied.warnings] == ["verification"]


def test_unreadable_amounts_while_ath_is_down_are_pending_too(lambda_handler, ath, settings, signal_log):
    ath_is_down(ath, settings)
    body = json.dumps({**COMPLETED, "fee": "cero"})
    assert lambda_handler.post(body).json()["error"] == "verification_pending"
    ath_is_back(ath, settings)
    assert replay.finish_pending(retry_now=True).verification["settled"] == {"applied": 1}
    assert str(Payment.objects.get().fee) == "0.60"  # ATH's


def test_the_relay_function_reports_the_pending_verifications(lambda_handler, ath, settings, capsys):
    from handler import relay

    ath_is_down(ath, settings)
    lambda_handler.post(BODY)
    capsys.readouterr()
    result = relay.run(retry_now=True)
    assert result["notices"]["verification"]["pending"] == 1


def test_events_that_are_not_verified_never_wait(lambda_handler, ath, settings):
    ath_is_down(ath, settings)
    response = lambda_handler.post(json.dumps(sample_data("payment_received")))
    assert response.status == 200 and response.json()["outcome"] == "applied"


def test_the_retention_purge_keeps_the_body_of_a_delivery_still_pending(lambda_handler, ath, settings):
    from athm_core.retention import purge_events

    ath_is_down(ath, settings)
    lambda_handler.post(BODY)
    WebhookEvent.objects.update(received_at=timezone.now() - timedelta(days=400))
    purge_events(older_than=timedelta(days=30))
    assert WebhookEvent.objects.get().body_bytes == BODY.encode()
    ath_is_back(ath, settings)
    assert replay.finish_pending(retry_now=True).verification["settled"] == {"applied": 1}
    purge_events(older_than=timedelta(days=30))
    assert WebhookEvent.objects.get(outcome=Outcome.PENDING).raw_body == ""  # settled: purged as usual


def test_a_relay_that_cannot_ask_ath_leaves_pending_deliveries_pending(
    lambda_handler, ath, settings, signal_log, caplog
):
    """As a relay deployed without the public token would run: it never applies what ATH was to confirm."""
    ath_is_down(ath, settings)
    lambda_handler.post(BODY)
    settings.ATHM_VERIFY = False
    with caplog.at_level("ERROR", logger="athm_core"):
        report = replay.finish_pending(retry_now=True).verification
    assert report["settled"] == {} and report["pending"] == 1
    assert not Payment.objects.exists() and signal_log.names() == []
    assert "1 pending delivery is not verified here: ATHM_VERIFY is off in this process" in caplog.text


@pytest.mark.django_db
def test_a_relay_that_cannot_ask_ath_says_nothing_when_nothing_is_pending(settings, caplog):
    """``athm relay`` from a local shell (no public token): no error about deliveries that do not exist."""
    settings.ATHM_VERIFY = False
    with caplog.at_level("ERROR", logger="athm_core"):
        assert replay.finish_pending(retry_now=True).verification["pending"] == 0
    assert caplog.text == ""


def test_after_the_deadline_ath_is_still_asked_first_and_its_no_stands(
    lambda_handler, ath, settings, signal_log
):
    settings.ATHM_APPLY_UNVERIFIED_AFTER = 900
    ath_is_down(ath, settings)
    forged = json.dumps({**COMPLETED, "total": "2600.00"})
    lambda_handler.post(forged)
    WebhookEvent.objects.update(received_at=timezone.now() - timedelta(seconds=901))
    ath_is_back(ath, settings)  # ATH says 26.00
    report = replay.finish_pending(retry_now=True).verification
    assert report["settled"] == {"rejected": 1} and report["applied_unverified"] == 0
    assert not Payment.objects.exists() and signal_log.names() == []


def test_the_relay_deployment_asks_ath_with_the_webhooks_tokens():
    from tests.conftest import ROOT, load_template

    relay = load_template(ROOT / "template.yaml")["Resources"]["RelayFunction"]["Properties"]
    variables = relay["Environment"]["Variables"]
    assert variables["ATHM_PUBLIC_TOKEN"] == {"Ref": "AthmPublicToken"}
    assert "ATHM_PRIVATE_TOKEN_SECRET_ARN" in variables


def test_anomalies_of_deliveries_the_relay_applies_are_reported(lambda_handler, ath, settings):
    from handler import relay

    ath_is_down(ath, settings)
    lambda_handler.post(json.dumps({**COMPLETED, "fee": "30.00"}))
    ath_is_back(ath, settings)
    ath_says(ath)  # ATH gives fee 0.6: the body's 30.00 differs, so it is rejected, no anomaly
    assert relay.run(retry_now=True)["notices"]["verification"]["anomalies"] == 0
    zero = {
        **COMPLETED,
        "ecommerceId": "zero-checkout",
        "total": 0,
        "subTotal": 0,
        "tax": 0,
        "fee": 0,
        "netAmount": 0,
    }
    ath_is_down(ath, settings)
    lambda_handler.post(json.dumps(zero))
    settings.ATHM_PAYMENTS_API_BASE_URL = ath.base_url
    ath.answer(
        FIND_PAYMENT_PATH,
        200,
        {
            "status": "success",
            "data": {
                "ecommerceStatus": "COMPLETED",
                "referenceNumber": COMPLETED["referenceNumber"],
                "total": 0,
            },
        },
    )
    assert relay.run(retry_now=True)["notices"]["verification"]["anomalies"] == 1


def test_a_relay_that_cannot_ask_ath_applies_only_after_the_merchants_deadline(lambda_handler, ath, settings):
    settings.ATHM_APPLY_UNVERIFIED_AFTER = 900
    ath_is_down(ath, settings)
    lambda_handler.post(BODY)
    settings.ATHM_VERIFY = False
    assert replay.finish_pending(retry_now=True).verification["still_pending"] == 1
    assert not Payment.objects.exists()
    WebhookEvent.objects.update(received_at=timezone.now() - timedelta(seconds=901))
    assert replay.finish_pending(retry_now=True).verification["applied_unverified"] == 1
    applied = WebhookEvent.objects.get(outcome=Outcome.APPLIED)
    assert [warning["field"] for warning in applied.warnings] == ["verification"]
