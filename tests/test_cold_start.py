"""What a container does when it starts: receivers from a layer, the SNS client only with a topic, the
scheduled relay function, and refusing to start misconfigured."""

import json
import socket
import subprocess
import sys
import textwrap
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest

from athm_core import processor
from athm_core.models import OutboxMessage, Payment
from athm_core.payloads import parse
from tests.conftest import ROOT, Topic, sample

LAYER_RECEIVERS = '''
"""Receivers a merchant ships in a Lambda layer (python/shop/receivers.py)."""
import os
from django.dispatch import receiver
from athm_core.signals import payment_completed, refund_sent


def _log(line):
    with open(os.environ["RECEIVER_LOG"], "a", encoding="utf-8") as handle:
        handle.write(line + "\\n")


@receiver(payment_completed)
def mark_order_paid(sender, payment, **kwargs):
    _log(f"paid {payment.metadata_1} {payment.total} sender={sender.__name__}")


@receiver(refund_sent)
def note_refund(sender, refund, payment, **kwargs):
    _log(f"refunded {refund.amount} of {payment.metadata_1} sender={sender.__name__}")
'''


def make_layer(tmp_path):
    """A directory laid out like a Lambda layer: its modules under python/ (Lambda's /opt/python)."""
    package = tmp_path / "layer" / "python" / "shop"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "receivers.py").write_text(textwrap.dedent(LAYER_RECEIVERS))
    return tmp_path / "layer" / "python"


def test_receivers_load_from_a_layer_and_fire(start_child, child_env, tmp_path):
    layer = make_layer(tmp_path)
    log = tmp_path / "receivers.log"
    child = start_child(
        ATHM_RECEIVERS="shop.receivers",
        RECEIVER_LOG=str(log),
        PYTHONPATH=f"{child_env['PYTHONPATH']}:{layer}",
    )
    child.wait_ready()
    assert child.request(sample("ecommerce_completed.production"))["signals"] == {"payment_completed": 1}
    assert child.request(sample("refund_sent.production"))["signals"] == {"refund_sent": 1}
    assert child.request(sample("ecommerce_completed.production"))["answer"]["duplicate"] is True
    assert child.close() == 0, child.log()
    assert log.read_text().splitlines() == [
        "paid order-1002 26.00 sender=Payment",
        "refunded 26.00 of order-1002 sender=Refund",
    ]
    assert Payment.objects.get().total_refunded_amount == Decimal("26.00")


def cold_start(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import handler.app"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_receiver_module_that_cannot_be_imported_fails_the_cold_start_with_its_name(child_env, tmp_path):
    layer = make_layer(tmp_path)
    (layer / "shop" / "broken.py").write_text("import not_installed_anywhere\n")
    env = {**child_env, "PYTHONPATH": f"{child_env['PYTHONPATH']}:{layer}"}

    missing = cold_start({**env, "ATHM_RECEIVERS": "shop.receivers, shop.missing"})
    assert missing.returncode != 0
    assert "ATHM_RECEIVERS: cannot import receiver module 'shop.missing'" in missing.stderr

    broken = cold_start({**env, "ATHM_RECEIVERS": "shop.broken"})
    assert broken.returncode != 0
    assert "cannot import receiver module 'shop.broken'" in broken.stderr
    assert "not_installed_anywhere" in broken.stderr


def test_in_lambda_without_a_webhook_secret_the_cold_start_fails(child_env):
    env = {key: value for key, value in child_env.items() if key != "ATHM_WEBHOOK_SECRET"}
    result = cold_start({**env, "AWS_LAMBDA_FUNCTION_NAME": "athm-webhook"})
    assert result.returncode != 0
    assert "ATHM_WEBHOOK_SECRET is not set" in result.stderr


def test_in_lambda_without_a_database_the_cold_start_fails(child_env):
    env = {key: value for key, value in child_env.items() if key != "DATABASE_URL"}
    result = cold_start({**env, "AWS_LAMBDA_FUNCTION_NAME": "athm-webhook"})
    assert result.returncode != 0
    assert "Set DATABASE_URL or DB_SECRET_ARN" in result.stderr


def test_outside_lambda_the_defaults_start(child_env, tmp_path):
    env = {
        key: value for key, value in child_env.items() if key not in ("DATABASE_URL", "ATHM_WEBHOOK_SECRET")
    }
    result = subprocess.run(
        [sys.executable, "-c", "import handler.app; from django.conf import settings; from handler import "
         "webhook_secrets; print(settings.DATABASES['default']['NAME'], webhook_secrets.secrets())"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == str(tmp_path / "athm.sqlite3")
    assert result.stdout.strip().endswith("()")


def test_in_lambda_the_handler_is_traced_with_x_ray(start_child):
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # stands in for the X-Ray daemon
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(30)
    child = start_child(
        AWS_LAMBDA_FUNCTION_NAME="athm-webhook",
        LAMBDA_TASK_ROOT="/var/task",
        _X_AMZN_TRACE_ID="Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        AWS_XRAY_DAEMON_ADDRESS=f"127.0.0.1:{daemon.getsockname()[1]}",
    )
    child.wait_ready()
    assert child.request(sample("simulated"))["status"] == 200
    packet = daemon.recv(65536).decode()
    daemon.close()
    assert child.close() == 0, child.log()
    segment = json.loads(packet.split("\n", 1)[1])
    assert segment["name"] == "## lambda_handler"
    assert segment["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_without_a_topic_boto3_is_never_imported(child_env):
    code = "import sys, handler.app; print(*sorted(m for m in sys.modules if m.startswith(('boto', 's3t'))))"
    result = python(code, child_env)
    assert result.returncode == 0, result.stderr
    # Powertools imports botocore's package (1 ms) to label its own calls; not boto3 (0.15 s of imports).
    assert result.stdout.split() == ["botocore"]


def test_with_a_topic_the_sns_client_is_made_during_the_cold_start(child_env, moto_server):
    env = {**child_env, **moto_server, "ATHM_SNS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:athm-events"}
    result = python("import handler.app; print(handler.app.sns_client.cache_info().currsize)", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def test_a_topic_arn_that_is_not_one_fails_the_cold_start(child_env):
    result = cold_start({**child_env, "ATHM_SNS_TOPIC_ARN": "athm-events"})
    assert result.returncode != 0
    assert "ATHM_SNS_TOPIC_ARN is not an SNS topic ARN: 'athm-events'" in result.stderr


RELAY_INVOCATION = """
import json
from handler.local import LocalContext
from handler.relay import lambda_handler
print(json.dumps(lambda_handler({"source": "aws.events", "detail-type": "Scheduled Event"}, LocalContext())))
"""


def test_the_scheduled_relay_function_publishes_whatever_is_pending(child_env, moto_server, settings):
    settings.ATHM_OUTBOX = True
    settings.ATHM_SNS_TOPIC_ARN = ""  # written, not published: as if SNS had been down
    for name in ("ecommerce_completed.production", "refund_sent.production", "donation_received"):
        processor.process(parse(sample(name)), raw_body=sample(name))
    topic = Topic(f"athm-{uuid.uuid4().hex[:12]}", endpoint_url=moto_server["AWS_ENDPOINT_URL"])
    env = {**child_env, **moto_server, "ATHM_SNS_TOPIC_ARN": topic.arn}
    env["POWERTOOLS_METRICS_DISABLED"] = "false"
    result = python(RELAY_INVOCATION, env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["outbox"] == {"published": 3, "failed": 0, "pending": 0, "oldest_pending_seconds": 0.0}
    assert report["notices"]["pending"] == 0
    # Powertools flushed the backlog metrics that the stuck-outbox alarm watches.
    metrics = next(json.loads(line) for line in lines if '"OutboxOldestPendingAge"' in line)
    assert metrics["OutboxPending"] == [0.0] and metrics["OutboxPublished"] == [1.0, 1.0, 1.0]
    assert sorted(m.body["type"] for m in topic.messages()) == [
        "donation_received",
        "payment_completed",
        "refund_sent",
    ]
    assert not OutboxMessage.objects.filter(published_at=None).exists()


def test_the_relay_function_without_a_topic_delivers_the_notices_left_pending(child_env, tmp_path):
    """A container that died after its commit left a notice for a receiver of the layer; the scheduled relay,
    in a stack without SNS, delivers it (and only it) once."""
    from django.utils import timezone

    from athm_core.models import Notice

    body = sample("ecommerce_completed.production")
    record = processor.process(parse(body), raw_body=body)  # no receiver connected here
    two_minutes_ago = timezone.now() - timedelta(minutes=2)
    Notice.objects.filter(webhook_event=record).update(
        receivers=[{"receiver": "shop.receivers.mark_order_paid", "state": "pending"}],
        delivered_at=None,
        created_at=two_minutes_ago,
        next_attempt_at=two_minutes_ago,
    )
    log = tmp_path / "receivers.log"
    env = {
        **child_env,
        "ATHM_RECEIVERS": "shop.receivers",
        "RECEIVER_LOG": str(log),
        "PYTHONPATH": f"{child_env['PYTHONPATH']}:{make_layer(tmp_path)}",
        "POWERTOOLS_METRICS_DISABLED": "false",
    }
    for _ in range(2):  # the second run finds nothing left
        result = python(RELAY_INVOCATION, env)
        assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {
        "notices": {
            "linked": 0,
            "delivered": 0,
            "late": 0,
            "failed": 0,
            "pending": 0,
            "oldest_pending_seconds": 0.0,
            "anomalies": 0,
            "verification": {
                "settled": {},
                "still_pending": 0,
                "applied_unverified": 0,
                "unverified_payments": 0,
                "anomalies": 0,
                "pending": 0,
                "oldest_pending_seconds": 0.0,
            },
        }
    }
    metrics = next(json.loads(line) for line in lines if '"NoticeOldestPendingAge"' in line)
    assert metrics["NoticesPending"] == [0.0]
    assert log.read_text().splitlines() == ["paid order-1002 26.00 sender=Payment"]
    notice = Notice.objects.get(webhook_event=record)
    assert notice.delivered_at is not None and notice.receivers[0]["state"] == "delivered"


@pytest.mark.parametrize("module", ["handler.reconcile", "handler.migrate", "handler.app", "handler.relay"])
def test_every_lambda_function_imports_the_receivers(child_env, tmp_path, module):
    layer = make_layer(tmp_path)
    env = {
        **child_env,
        "ATHM_RECEIVERS": "shop.receivers",
        "PYTHONPATH": f"{child_env['PYTHONPATH']}:{layer}",
    }
    result = python(f"import sys, {module}; print('shop.receivers' in sys.modules)", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True"


def test_the_athm_commands_reach_the_receivers(child_env, tmp_path):
    from athm_core.models import WebhookEvent
    from tests.test_local import athm_command

    layer = make_layer(tmp_path)
    log = tmp_path / "receivers.log"
    env = {
        **child_env,
        "ATHM_RECEIVERS": "shop.receivers",
        "RECEIVER_LOG": str(log),
        "PYTHONPATH": f"{child_env['PYTHONPATH']}:{layer}",
    }
    body = sample("ecommerce_completed.production")
    failed = processor.record(body, WebhookEvent.Outcome.FAILED, error="Traceback ...", event=parse(body))
    result = subprocess.run(
        [*athm_command(), "reprocess", str(failed.pk)], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["paid order-1002 26.00 sender=Payment"]
