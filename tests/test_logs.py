"""Logs of a full run, at DEBUG everywhere, hold no customer data, raw bodies or the webhook secret."""

import json
import textwrap
import uuid

from athm_core.models import OutboxMessage
from tests.conftest import SAMPLES, SECRET, Topic, sample, sample_data

PII_RECEIVER = """
from django.dispatch import receiver
from athm_core.signals import payment_completed

@receiver(payment_completed)
def crash_with_customer_data(sender, payment, **kwargs):
    raise ValueError(f"cannot email {payment.name} at {payment.email} or call {payment.phone_number}")
"""


def customer_data() -> set[str]:
    values = set()
    for path in SAMPLES.glob("*.json"):
        data = json.loads(path.read_text())
        for field in ("name", "email", "phoneNumber", "message"):
            value = str(data.get(field) or "").strip()
            if len(value) > 3:
                values.add(value)
    values |= {"7875550102", "(787) 555-0102", "Pastelillo"}
    return values


def test_a_full_run_logs_no_customer_data(start_child, child_env, moto_server, tmp_path):
    (tmp_path / "pii_receivers.py").write_text(textwrap.dedent(PII_RECEIVER))
    topic = Topic(f"athm-{uuid.uuid4().hex[:12]}", endpoint_url=moto_server["AWS_ENDPOINT_URL"])
    child = start_child(
        ATHM_SNS_TOPIC_ARN=topic.arn,  # the publisher logs too
        **moto_server,
        CHILD_ROOT_LOG_LEVEL="DEBUG",
        POWERTOOLS_LOG_LEVEL="DEBUG",
        ATHM_RECEIVERS="pii_receivers",
        PYTHONPATH=f"{child_env['PYTHONPATH']}:{tmp_path}",
    )
    child.wait_ready()
    answers = []
    for path in sorted(SAMPLES.glob("*.json")):
        answers.append(child.request(path.read_text())["status"])
        answers.append(child.request(path.read_text())["status"])
    invalid = {**sample_data("payment_received"), "total": "Carmen Rivera"}
    answers.append(child.request(json.dumps(invalid))["status"])
    answers.append(child.request(sample("payment_received"), path="/webhook/not-the-secret")["status"])
    answers.append(child.request(path=f"/webhook/{SECRET}", method="GET")["status"])
    assert child.close() == 0
    assert answers.count(200) == 2 * len(list(SAMPLES.glob("*.json"))) and answers[-3:] == [400, 404, 405]

    log = child.log()
    assert "webhook event processed" in log and "crash_with_customer_data" in log  # the logs are there
    # And the messages went out.
    # One per sample that changes something (not the simulated one).
    changes = len(list(SAMPLES.glob("*.json"))) - 1
    published = OutboxMessage.objects.filter(published_at__isnull=False).count()
    assert len(topic.messages()) == published == changes
    for value in customer_data():
        assert value not in log, f"customer data in the logs: {value!r}"
    assert SECRET not in log
    assert '"transactionType"' not in log and "referenceTransactionId" not in log  # no raw bodies
