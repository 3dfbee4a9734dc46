"""The one receive path: the check every delivery goes through is pluggable (``ATHM_VERIFIER``, or the
``check`` argument), and the webhook, ``athm reprocess`` and the admin all take it."""

import json

import pytest

from athm_core import processor, replay
from athm_core.ath.verification import Unavailable
from athm_core.models import Payment, WebhookEvent
from athm_core.payloads import parse_data
from athm_core.receive import receive
from tests.conftest import sample, sample_data

pytestmark = pytest.mark.django_db(transaction=True)

Outcome = WebhookEvent.Outcome
COMPLETED = "ecommerce_completed.production"
checked: list[str] = []


def contradict_everything(event):
    checked.append(event.idempotency_key)
    return f"the shop's own check refuses {event.type}"


def cannot_tell(event):
    raise Unavailable("the shop's checker is down")


@pytest.fixture(autouse=True)
def forget_checks():
    checked.clear()


def test_the_setting_names_the_check_the_webhook_applies(lambda_handler, settings, signal_log):
    settings.ATHM_VERIFIER = "tests.test_receive.contradict_everything"
    response = lambda_handler.post(sample(COMPLETED))
    assert response.status == 200 and response.json()["accepted"] is False
    record = WebhookEvent.objects.get(pk=response.json()["event_id"])
    assert record.outcome == Outcome.REJECTED
    assert record.error == "the shop's own check refuses ecommerce.completed"
    assert not Payment.objects.exists() and signal_log.calls == []
    assert checked == [record.idempotency_key]

    settings.ATHM_VERIFIER = "tests.test_receive.cannot_tell"
    response = lambda_handler.post(sample(COMPLETED))
    assert response.status == 503 and response.json()["error"] == "verification_unavailable"
    assert WebhookEvent.objects.count() == 1


def test_reprocess_takes_the_same_check(settings, signal_log):
    body = sample(COMPLETED)
    failed = processor.record(body, Outcome.FAILED, error="Traceback ...", event=parse_data(json.loads(body)))
    settings.ATHM_VERIFIER = "tests.test_receive.contradict_everything"
    [result] = replay.reprocess([failed])
    assert result.status == Outcome.REJECTED and "the shop's own check" in result.detail
    assert not Payment.objects.exists() and len(checked) == 1


def test_a_check_given_to_receive_replaces_the_setting(settings, signal_log):
    settings.ATHM_VERIFIER = "tests.test_receive.contradict_everything"
    delivery = receive(sample(COMPLETED).encode(), check=lambda event: None)
    assert delivery.outcome == Outcome.APPLIED and checked == []
    assert Payment.objects.get().total == sample_data(COMPLETED)["total"]
    assert signal_log.names() == ["payment_completed"]


def test_a_body_that_cannot_be_read_is_kept_as_invalid_or_raised_for_a_replay(settings):
    delivery = receive(b'{"transactionType": "ecommerce", "status": "completed"}')
    assert delivery.outcome == Outcome.INVALID and delivery.field == "ecommerceId"
    assert WebhookEvent.objects.get(pk=delivery.record.pk).error == delivery.error
    with pytest.raises(ValueError, match="ecommerceId"):
        receive(b'{"transactionType": "ecommerce", "status": "completed"}', keep_invalid=False)
    assert WebhookEvent.objects.count() == 1
