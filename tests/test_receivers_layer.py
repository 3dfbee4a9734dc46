"""The example receivers layer (examples/receivers_layer): the shop's orders kept in step with ATH Móvil.

Each check runs the real handler in child processes with the layer's python directory on their path, as
Lambda puts a layer's ``python/`` on sys.path. ``LAYER_DIRS`` names the directories checked: the source
SAM builds the layer from and, once the template builds it, the built layer itself.

The test database was created with the project's apps only, so each test migrates ``shop`` into it in a
subprocess (with the layer on the path) and migrates it back to zero afterwards: shop's tables never
outlive the test, and the usual flush of the project's tables is untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from athm_core.models import Payment, Refund, WebhookEvent
from tests.conftest import ROOT, Child, sample, sample_data

# The directories whose python code is checked: the layer's source, which SAM's python3.11 build copies
# as it is into the layer's python/ folder. Add the built layer's python/ once the template builds it.
BUILT = ROOT / ".aws-sam" / "receivers-layer" / "ReceiversLayer" / "python"
LAYER_DIRS = [
    pytest.param(ROOT / "examples" / "receivers_layer", id="source"),
    # What `make build` (the same build as the function's) makes of it, as Lambda would mount it.
    pytest.param(BUILT, id="built"),
]


# The customer of ecommerce_completed.production and refund_sent.production, however the samples write it.
CUSTOMER = ["Luis Ortiz", "luis@example.com", "7875550102", "(787) 555-0102", "555-0102"]

# Test-only receivers, connected after shop's: every signal reaches shop's receivers a second time, as if
# a merchant's code re-sent it. Whatever the shop does must come out the same.
DELIVER_TWICE = '''
"""Sends each payment_completed and refund_sent once more, to every receiver."""
import threading

from django.dispatch import receiver

from athm_core.signals import payment_completed, refund_sent

_again = threading.local()


@receiver([payment_completed, refund_sent], dispatch_uid="tests.deliver_twice")
def deliver_again(sender, signal, **kwargs):
    if getattr(_again, "active", False):
        return
    _again.active = True
    try:
        signal.send(sender=sender, **kwargs)  # raises if a receiver raises: recorded on the event
    finally:
        _again.active = False
'''

STATE = """
from shop.models import Confirmation, Order

money = ("total", "amount_paid", "amount_refunded")
orders = list(Order.objects.order_by("reference"))
print(json.dumps({
    "orders": {
        order.reference: {
            "status": order.status,
            **{name: None if getattr(order, name) is None else str(getattr(order, name)) for name in money},
            "payment_reference_number": order.payment_reference_number,
            "created_from_payment": order.created_from_payment,
        }
        for order in orders
    },
    "money_types": sorted({type(getattr(o, name)).__name__ for o in orders for name in money} - {"NoneType"}),
    "confirmations": [
        {
            "order": c.order.reference,
            "amount": str(c.amount),
            "payment_reference_number": c.payment_reference_number,
        }
        for c in Confirmation.objects.order_by("pk")
    ],
}))
"""


class Shop:
    """The example layer on the path of the handler's child processes, with its tables in the test database.

    ``layer_dir`` is the directory that stands for the layer's ``python/`` folder (Lambda's /opt/python).
    """

    def __init__(
        self, start_child: Callable[..., Child], child_env: dict[str, str], layer_dir: Path, tmp_path: Path
    ) -> None:
        self.layer_dir = layer_dir
        self.tmp_path = tmp_path
        self._start_child = start_child
        self.children: list[Child] = []
        self.env = {
            **child_env,
            "ATHM_INSTALLED_APPS": "shop",
            "ATHM_RECEIVERS": "shop.receivers",
            "PYTHONPATH": f"{child_env['PYTHONPATH']}:{layer_dir}",
        }

    def migrate(self, *arguments: str) -> None:
        """``athm migrate ARGUMENTS`` with the layer, against the test database."""
        result = subprocess.run(
            [sys.executable, "-m", "handler.cli", "migrate", "--noinput", *arguments],
            env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr

    def django(self, code: str) -> Any:
        """Run ``code`` in a process with Django set up (shop installed); returns the JSON it printed last."""
        result = subprocess.run(
            [sys.executable, "-c", f"import json\nimport django\ndjango.setup()\n{code}"],
            env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    def create_order(self, reference: str, total: str) -> None:
        """What the checkout does before it shows the ATH Móvil button with ``metadata1=reference``."""
        self.django(
            "from decimal import Decimal\nfrom shop.models import Order\n"
            f"Order.objects.create(reference={reference!r}, total=Decimal({total!r}))\nprint('{{}}')"
        )

    def state(self) -> dict[str, Any]:
        """The shop's orders (money as exact strings) and confirmations, read through its models."""
        return self.django(STATE)

    def start(self, *, deliver_twice: bool = False) -> Child:
        """A ready child process running the handler (one Lambda container) with the layer's receivers."""
        env = {}
        if deliver_twice:
            (self.tmp_path / "deliver_twice.py").write_text(textwrap.dedent(DELIVER_TWICE))
            env = {
                "ATHM_RECEIVERS": "shop.receivers,deliver_twice",
                "PYTHONPATH": f"{self.env['PYTHONPATH']}:{self.tmp_path}",
            }
        child = self._start_child(**{**self.env, **env})
        self.children.append(child)
        child.wait_ready()
        return child

    def close(self) -> None:
        for child in self.children:
            child.close()


# shop.receivers' functions that log. The handler's Powertools logger clears appended keys (the logger's
# name among them) on each invocation, so a record's "location" ("function:line") tells whose it is.
SHOP_LOGGERS = {"mark_order_paid", "confirm_order", "send_confirmation", "record_refund"}


def shop_log(child: Child) -> list[dict[str, Any]]:
    """The shop's log records, in order, from a child's log (Powertools JSON lines)."""
    records = [json.loads(line) for line in child.log().splitlines() if line.startswith('{"level"')]
    return [record for record in records if record["location"].split(":")[0] in SHOP_LOGGERS]


def refund_event(amount: str, daily_transaction_id: str, date: str) -> str:
    """A refund of ecommerce_completed.production's payment (Luis Ortiz, order-1002)."""
    data = sample_data("refund_sent.production")
    return json.dumps({**data, "total": amount, "dailyTransactionID": daily_transaction_id, "date": date})


def assert_no_receiver_errors() -> None:
    assert {event.pk: event.receiver_errors for event in WebhookEvent.objects.all()} == {
        event.pk: [] for event in WebhookEvent.objects.all()
    }


@pytest.fixture(params=LAYER_DIRS)
def layer_dir(request) -> Path:
    if request.param == BUILT and not BUILT.exists():
        reason = "no built layer in .aws-sam/receivers-layer: run `make build` (make test does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return request.param


@pytest.fixture
def shop(start_child, child_env, layer_dir, tmp_path) -> Iterator[Shop]:
    shop = Shop(start_child, child_env, layer_dir, tmp_path)
    shop.migrate("shop")
    try:
        yield shop
    finally:
        shop.close()  # no child holds a connection while the tables go
        shop.migrate("shop", "zero")


@pytest.mark.parametrize("deliver_twice", [False, True], ids=["once", "receivers-run-twice"])
def test_an_order_is_paid_confirmed_once_and_refunded_in_two_parts(shop, deliver_twice):
    shop.create_order("order-1002", total="26.00")
    child = shop.start(deliver_twice=deliver_twice)
    times = 2 if deliver_twice else 1
    completed = sample("ecommerce_completed.production")

    assert child.request(completed)["signals"] == {"payment_completed": times}
    redelivered = child.request(completed)
    assert redelivered["status"] == 200 and redelivered["answer"]["duplicate"] is True
    payment = Payment.objects.get()
    paid = {
        "status": "paid",
        "total": "26.00",
        "amount_paid": "26.00",
        "amount_refunded": "0.00",
        "payment_reference_number": payment.reference_number,
        "created_from_payment": False,
    }
    state = shop.state()
    assert state["orders"] == {"order-1002": paid}
    assert state["money_types"] == ["Decimal"]
    confirmation = {
        "order": "order-1002",
        "amount": "26.00",
        "payment_reference_number": payment.reference_number,
    }
    assert state["confirmations"] == [confirmation]

    first = refund_event("10.00", "3", "2026-11-21 09:20:41")
    assert child.request(first)["signals"] == {"refund_sent": times}
    assert child.request(first)["answer"]["duplicate"] is True
    state = shop.state()
    assert state["orders"]["order-1002"] == {
        **paid,
        "status": "partially_refunded",
        "amount_refunded": "10.00",
    }

    rest = refund_event("16.00", "4", "2026-11-21 10:02:13")
    assert child.request(rest)["signals"] == {"refund_sent": times}
    state = shop.state()
    assert state["orders"]["order-1002"] == {**paid, "status": "refunded", "amount_refunded": "26.00"}
    assert state["confirmations"] == [confirmation]
    assert Payment.objects.get().total_refunded_amount == Decimal("26.00")

    assert child.close() == 0, child.log()
    assert_no_receiver_errors()
    messages = [record["message"] for record in shop_log(child)]
    paid_line = (
        f"order order-1002 paid: 26.00 by payment {payment.pk} (ATH reference {payment.reference_number})"
    )
    assert messages.count(paid_line) == 1, messages  # a second run finds the order paid and stops
    assert sum(message.startswith("confirmation ") for message in messages) == 1
    refund_10, refund_16 = Refund.objects.order_by("pk")
    for refund, total, status in [
        (refund_10, "10.00", "partially_refunded"),
        (refund_16, "26.00", "refunded"),
    ]:
        line = (
            f"refund {refund.pk} of {refund.amount} on payment {payment.pk} (ATH reference "
            f"{payment.reference_number}) for order order-1002: {total} of 26.00 refunded, order {status}"
        )
        assert messages.count(line) == times, messages  # each run logs the refund it was given
    log = child.log()
    for value in CUSTOMER:
        assert value not in log, f"customer data in the logs: {value!r}"


def test_a_payment_for_an_order_the_checkout_never_created_makes_the_order(shop):
    child = shop.start()
    answer = child.request(sample("ecommerce_completed.production"))
    assert answer["status"] == 200 and answer["signals"] == {"payment_completed": 1}
    payment = Payment.objects.get()
    state = shop.state()
    assert state["orders"] == {
        "order-1002": {
            "status": "paid",
            "total": None,
            "amount_paid": "26.00",
            "amount_refunded": "0.00",
            "payment_reference_number": payment.reference_number,
            "created_from_payment": True,
        }
    }
    assert [c["order"] for c in state["confirmations"]] == ["order-1002"]
    assert child.close() == 0, child.log()
    assert_no_receiver_errors()
    records = shop_log(child)
    assert {
        "level": "WARNING",
        "message": f"payment {payment.pk} paid order order-1002, which the checkout never created",
    }.items() <= next(r for r in records if "never created" in r["message"]).items()


def test_an_app_payment_and_its_refund_have_no_order_and_change_nothing(shop):
    """'Pay a business' payments from the app carry no metadata1: no order to pay or refund."""
    shop.create_order("order-1002", total="26.00")
    child = shop.start()
    app_payment = sample_data("payment_received")
    assert child.request(json.dumps(app_payment))["signals"] == {"payment_received": 1}
    refund = {**sample_data("refund_sent.documented"), "referenceNumber": app_payment["referenceNumber"]}
    answer = child.request(json.dumps({**refund, "total": "8.00"}))
    assert answer["status"] == 200 and answer["signals"] == {"refund_sent": 1}
    state = shop.state()
    assert state["orders"]["order-1002"]["status"] == "open"
    assert state["orders"]["order-1002"]["amount_refunded"] == "0.00"
    assert state["confirmations"] == []
    assert child.close() == 0, child.log()
    assert_no_receiver_errors()
    payment, refund_row = Payment.objects.get(), Refund.objects.get()
    assert [r["message"] for r in shop_log(child)] == [
        f"refund {refund_row.pk} of 8.00 on payment {payment.pk} (ATH reference {payment.reference_number}) "
        "matches no order: nothing updated"
    ]


def test_an_order_paid_twice_keeps_its_first_payment(shop):
    """A second payment for the same order is logged for a person to refund; the order stays as paid."""
    shop.create_order("order-1002", total="26.00")
    child = shop.start()
    first = sample_data("ecommerce_completed.production")
    second = {
        **first,
        "ecommerceId": "5e0d4c3b-2a19-4f08-9e7d-6c5b4a392817",
        "referenceNumber": "215070445-402894c185ab1be40185acfe61c2000d",
    }
    assert child.request(json.dumps(first))["signals"] == {"payment_completed": 1}
    assert child.request(json.dumps(second))["signals"] == {"payment_completed": 1}
    # Refunding the second payment does not touch the order the first one paid.
    refund = {**sample_data("refund_sent.production"), "referenceNumber": second["referenceNumber"]}
    assert child.request(json.dumps(refund))["signals"] == {"refund_sent": 1}
    state = shop.state()
    order = state["orders"]["order-1002"]
    assert (order["status"], order["amount_paid"], order["amount_refunded"]) == ("paid", "26.00", "0.00")
    assert order["payment_reference_number"] == first["referenceNumber"]
    assert [c["payment_reference_number"] for c in state["confirmations"]] == [first["referenceNumber"]]
    assert child.close() == 0, child.log()
    assert_no_receiver_errors()
    warnings = [r["message"] for r in shop_log(child) if r["level"] == "WARNING"]
    assert len(warnings) == 2
    assert warnings[0].startswith(
        f"order order-1002 is already paid by ATH reference {first['referenceNumber']}"
    )
    assert "not of the payment that paid order order-1002" in warnings[1]


def cold_start(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import handler.app"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_shop_app_without_the_layer_fails_the_cold_start(child_env):
    result = cold_start({**child_env, "ATHM_INSTALLED_APPS": "shop"})
    assert result.returncode != 0
    assert "No module named 'shop'" in result.stderr


def test_the_receivers_without_their_app_fail_the_cold_start(child_env, layer_dir):
    env = {
        **child_env,
        "ATHM_RECEIVERS": "shop.receivers",
        "PYTHONPATH": f"{child_env['PYTHONPATH']}:{layer_dir}",
    }
    result = cold_start(env)
    assert result.returncode != 0
    assert "cannot import receiver module 'shop.receivers'" in result.stderr
    assert "isn't in an application in INSTALLED_APPS" in result.stderr
