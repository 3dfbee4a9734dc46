"""A verified replay of the benchmark corpus with every tenth eCommerce body forged keeps the ledger exact.

The fake ATH Móvil on 127.0.0.1 answers findPayment from a table made of the genuine checkouts. Before each
tenth genuine completion, a forgery of it arrives: the real ecommerceId, total and reference number (what
the paying customer sees), with another order (metadata1), other items or other amounts. No forged value may
be stored, every genuine payment must be, and every forgery must be visible (``rejected``, naming what
differs).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from athm_core.ath.client import FIND_PAYMENT_PATH
from athm_core.models import Payment, WebhookEvent
from athm_core.payloads import parse
from bench.corpus import generate
from tests.fake_athm import (
    Answer,
    fake_athm_fixture,  # noqa: F401
)

pytestmark = pytest.mark.django_db(transaction=True)

FORGERIES = [
    ("metadata1", lambda data: {**data, "metadata1": "FORGED-order"}),
    ("items", lambda data: {**data, "items": [{"name": "FORGED laptop", "quantity": 1, "price": "1.00"}]}),
    ("fee", lambda data: {**data, "fee": "0.01", "netAmount": None}),
]


def find_payment_table(bodies: list[str]) -> dict[str, dict[str, Any]]:
    """What ATH Móvil's findPayment says of each genuine checkout: its status, and the fields of its body."""
    table: dict[str, dict[str, Any]] = {}
    for body in bodies:
        data = json.loads(body)
        ecommerce_id = str(data.get("ecommerceId") or "").strip()
        if not ecommerce_id:
            continue
        status = str(data.get("status", "")).strip().upper()
        if status == "COMPLETED":
            table[ecommerce_id] = {**data, "ecommerceStatus": "COMPLETED"}
        elif ecommerce_id not in table:
            table[ecommerce_id] = {"ecommerceStatus": "CANCEL", "metadata1": data.get("metadata1")}
    return table


def test_a_verified_replay_with_every_tenth_checkout_forged_keeps_the_ledger_exact(
    lambda_handler, fake_athm, settings
):
    settings.ATHM_VERIFY = True
    settings.ATHM_PUBLIC_TOKEN = "pk_test_0123456789"
    settings.ATHM_VERIFY_TIMEOUT = 2.0
    corpus = generate(flows=60)
    bodies = [delivery.body for delivery in corpus.deliveries]
    table = find_payment_table(bodies)

    def find_payment(request: dict[str, Any]) -> Answer:
        data = table.get(request.get("ecommerceId", ""))
        if data is None:
            return Answer(404, {"status": "error", "message": "not found", "errorcode": "BTRA_0031"})
        return Answer(200, {"status": "success", "data": data})

    fake_athm.answer_by(FIND_PAYMENT_PATH, find_payment)

    genuine_completions: dict[str, dict[str, Any]] = {}
    forged = 0
    for delivery in corpus.deliveries:
        data = json.loads(delivery.body)
        event = parse(delivery.body)
        is_new_completion = delivery.kind == "ecommerce_completed" and event.ecommerce_id
        if is_new_completion and event.ecommerce_id not in genuine_completions:
            genuine_completions[event.ecommerce_id] = data
            if len(genuine_completions) % 10 == 0:
                _, forge = FORGERIES[forged % len(FORGERIES)]
                response = lambda_handler.post(json.dumps(forge(data)))
                assert response.status == 200 and response.json()["outcome"] == "rejected", response
                forged += 1
        response = lambda_handler.post(delivery.body)
        assert response.status in (200, 400), response

    assert forged >= 3
    # Every forgery is visible, naming what differs.
    rejected = WebhookEvent.objects.filter(outcome="rejected")
    assert rejected.count() == forged
    assert all(record.error.startswith("ATH Móvil's findPayment answer differs: ") for record in rejected)
    # No forged value stored.
    assert not Payment.objects.filter(metadata_1="FORGED-order").exists()
    assert not any("FORGED" in item["name"] for payment in Payment.objects.all() for item in payment.items)
    # Every genuine completion recorded, with the genuine order and money.
    for ecommerce_id, data in genuine_completions.items():
        payment = Payment.objects.get(ecommerce_id=ecommerce_id)
        genuine = parse(json.dumps(data))
        assert payment.status == "completed"
        assert (payment.metadata_1, payment.total, payment.fee) == (
            genuine.metadata_1,
            genuine.total,
            genuine.fee,
        )
    completed_cents = sum(
        int(payment.total * 100)
        for payment in Payment.objects.filter(transaction_type="ecommerce", status="completed")
    )
    expected_cents = sum(int(parse(json.dumps(data)).total * 100) for data in genuine_completions.values())
    assert completed_cents == expected_cents and completed_cents > 0
    assert Decimal(completed_cents) / 100 > 0
