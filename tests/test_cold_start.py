"""What a container does when it starts: receivers from a layer, and refusing to start misconfigured."""

import json
import socket
import subprocess
import sys
import textwrap
from decimal import Decimal

from athm_core.models import Payment
from tests.conftest import ROOT, sample

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
        [sys.executable, "-c", "import handler.app; from django.conf import settings; "
         "print(settings.DATABASES['default']['NAME'], settings.ATHM_WEBHOOK_SECRETS)"],
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
