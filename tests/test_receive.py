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
    assert response.status == 503 and response.json()["error"] == "verification_pending"
    kept = WebhookEvent.objects.get(pk=response.json()["event_id"])
    assert kept.outcome == Outcome.PENDING and kept.error == "the shop's checker is down"
    assert WebhookEvent.objects.count() == 2


def test_reprocess_takes_the_same_check(settings, signal_log):
    body = sample(COMPLETED)
    failed = processor.record(body, Outcome.FAILED, error="Traceback ...", event=parse_data(json.loads(body)))
    settings.ATHM_VERIFIER = "tests.test_receive.contradict_everything"
    [result] = replay.reprocess([failed])
    assert result.status == Outcome.REJECTED and "the shop's own check" in result.detail
    assert not Payment.objects.exists() and len(checked) == 1


def a_buggy_check(event):
    raise KeyError("ecommerceStatus")


def test_a_check_that_cannot_tell_is_unavailable_and_a_buggy_one_a_kept_failure(lambda_handler, settings):
    settings.ATHM_VERIFIER = "tests.test_receive.a_buggy_check"
    response = lambda_handler.post(sample(COMPLETED))
    assert response.status == 500
    failed = WebhookEvent.objects.get(pk=response.json()["event_id"])
    assert failed.outcome == Outcome.FAILED and "KeyError: 'ecommerceStatus'" in failed.error

    def times_out(event):
        raise TimeoutError("the shop's checker did not answer")

    # A new delivery is kept pending; a replay (keep_invalid=False) is told, with nothing recorded.
    assert receive(sample(COMPLETED).encode(), check=times_out).outcome == Outcome.PENDING
    with pytest.raises(Unavailable, match="TimeoutError: the shop's checker did not answer"):
        receive(sample(COMPLETED).encode(), check=times_out, keep_invalid=False)
    assert WebhookEvent.objects.count() == 2 and not Payment.objects.exists()


def test_a_check_given_to_receive_replaces_the_setting(settings, signal_log):
    settings.ATHM_VERIFIER = "tests.test_receive.contradict_everything"
    delivery = receive(sample(COMPLETED).encode(), check=lambda event: None)
    assert delivery.outcome == Outcome.APPLIED and checked == []
    assert Payment.objects.get().total == sample_data(COMPLETED)["total"]
    assert signal_log.names() == ["payment_completed"]


def test_a_body_that_cannot_be_read_is_kept_as_invalid_or_raised_for_a_replay(settings):
    delivery = receive(b'{"transactionType": "ecommerce", "status": "completed"}')
    assert delivery.outcome == Outcome.INVALID and delivery.field == "referenceNumber"
    assert WebhookEvent.objects.get(pk=delivery.record.pk).error == delivery.error
    with pytest.raises(ValueError, match="referenceNumber"):
        receive(b'{"transactionType": "ecommerce", "status": "completed"}', keep_invalid=False)
    assert WebhookEvent.objects.count() == 1


ADMIN_REPROCESS = """
import json
from django.contrib.auth.models import User
from django.test import Client
from django.test.utils import setup_test_environment
from athm_core import processor
from athm_core.models import Payment, WebhookEvent
from athm_core.payloads import parse

setup_test_environment()
body = open("tests/samples/ecommerce_completed.production.json").read()
failed = processor.record(body, "failed", error="Traceback ...", event=parse(body))
User.objects.create_superuser("admin", "admin@example.com", "pw")
client = Client()
client.login(username="admin", password="pw")
data = {"action": "reprocess_selected", "_selected_action": [failed.pk], "index": 0}
response = client.post("/admin/athm_core/webhookevent/", data, follow=True)
print(json.dumps({
    "messages": [str(m) for m in response.context["messages"]],
    "latest": WebhookEvent.objects.latest("pk").outcome,
    "payments": Payment.objects.count(),
}))
"""


def test_the_admin_s_reprocess_goes_through_the_configured_check(child_env, tmp_path):
    from tests.test_local import run_with_the_admin

    env = {**child_env, "ATHM_VERIFIER": "tests.test_receive.contradict_everything"}
    outcome = run_with_the_admin(ADMIN_REPROCESS, env, tmp_path)
    assert outcome["latest"] == "rejected" and outcome["payments"] == 0
    assert any("rejected" in m and "the shop's own check refuses" in m for m in outcome["messages"])


def test_a_verifier_that_cannot_be_imported_is_found_at_the_start(child_env, settings):
    from django.core import checks

    settings.ATHM_VERIFIER = "shop.checks.no_such_function"
    [error] = [e for e in checks.run_checks() if e.id == "athm_core.E001"]
    assert "ATHM_VERIFIER: cannot import 'shop.checks.no_such_function'" in error.msg

    from tests.test_cold_start import cold_start

    started = cold_start({**child_env, "ATHM_VERIFIER": "shop.checks.no_such_function"})
    assert started.returncode != 0
    assert "ATHM_VERIFIER: cannot import 'shop.checks.no_such_function'" in started.stderr
