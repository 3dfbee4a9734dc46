"""A deterministic corpus of ATH Móvil webhook deliveries, in every payload shape seen in production.

``generate(flows, seed)`` plays out that many checkout flows (eCommerce payments completed, cancelled and
expired, payments and donations from the app, the "test webhook" button) with partial and full refunds,
and turns them into the deliveries ATH Móvil would send: lower- or upper-case types, ``cancelled`` or
``CANCEL``, both daily-id spellings, ``subtotal`` or ``subTotal``, money as strings, integers, floats and
single-precision float noise, three phone formats, dates with and without fractions or a ``T``, stray
spaces, unknown extra fields. About one delivery in five is a redelivery of an earlier one (same bytes),
and a few refunds arrive before their payment.

The same ``flows`` and ``seed`` give the same bytes. Only the standard library is used: the peer's
virtual environment reads the corpus too.

Each delivery has a ``kind``: the event type for a first delivery, ``redelivery`` for a copy. The corpus
also knows what a correct receiver must record: :attr:`Corpus.expected` counts the state changes (by the
name of the signal that announces each) and the money, to the cent.
"""

from __future__ import annotations

import json
import random
import struct
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

CENT = Decimal("0.01")
START = datetime(2026, 11, 2, 8, 0, 0)  # Puerto Rico time: ATH Móvil's dates carry no zone

# How flows are spread over kinds of checkout (weights).
FLOW_MIX = {
    "ecommerce_completed": 55,
    "ecommerce_cancelled": 8,
    "ecommerce_expired": 6,
    "payment_received": 20,
    "donation_received": 10,
    "simulated": 1,
}
REFUNDED_SHARE = {"ecommerce_completed": 0.18, "payment_received": 0.05}
# A quarter of first deliveries are delivered again, so about one delivery in five is a redelivery.
REDELIVERED_SHARE = 0.25
# Share of refunds that ATH Móvil delivers before the payment they refund (slow or lost first delivery).
EARLY_REFUND_SHARE = 0.03

PRODUCTS = [
    ("Café colao", Decimal("2.50")),
    ("Pastelillo", Decimal("1.75")),
    ("Mallorca", Decimal("3.25")),
    ("Alcapurria", Decimal("2.00")),
    ("Mofongo", Decimal("14.95")),
    ("Piragua", Decimal("1.50")),
    ("Camiseta Boricua", Decimal("19.99")),
    ("Pasta de guayaba", Decimal("4.49")),
]
NAMES = ["Carmen Rivera", "Luis Ortiz", "Ana Colón", "José Vega", "Marisol Cruz", "Héctor Santiago"]

# What each first delivery's event announces, by the signal names both receivers use.
SIGNAL_OF = {
    "ecommerce_completed": "payment_completed",
    "ecommerce_cancelled": "payment_cancelled",
    "ecommerce_expired": "payment_expired",
    "payment_received": "payment_received",
    "donation_received": "donation_received",
    "refund_sent": "refund_sent",
    "simulated": None,
}


@dataclass(frozen=True)
class Delivery:
    kind: str  # the event type of a first delivery, or "redelivery"
    body: str


@dataclass
class Corpus:
    deliveries: list[Delivery]
    expected: dict[str, Any] = field(default_factory=dict)

    def kinds(self) -> Counter:
        return Counter(delivery.kind for delivery in self.deliveries)

    def write(self, path: Path) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            for delivery in self.deliveries:
                handle.write(json.dumps({"kind": delivery.kind, "body": delivery.body}, ensure_ascii=False))
                handle.write("\n")


def read(path: Path):
    """The deliveries of a corpus file, one at a time: ``(kind, body)``."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            item = json.loads(line)
            yield item["kind"], item["body"]


def generate(flows: int, seed: int = 2026) -> Corpus:
    rng = random.Random(seed)
    timeline: list[tuple[datetime, int, str, dict[str, Any]]] = []  # (when, order, kind, payload)
    expected_changes: Counter = Counter()
    money = {"payments_cents": 0, "refunds_cents": 0}
    order = 0

    def deliver(when: datetime, kind: str, payload: dict[str, Any]) -> None:
        nonlocal order
        timeline.append((when, order, kind, payload))
        order += 1

    clock = START
    for number in range(flows):
        clock += timedelta(seconds=rng.randint(5, 90))
        flow = rng.choices(list(FLOW_MIX), weights=list(FLOW_MIX.values()))[0]
        shape = _Shape(rng)
        checkout = _checkout(rng, number)
        if flow.startswith("ecommerce_"):
            status = {"ecommerce_completed": "completed", "ecommerce_cancelled": "cancelled"}.get(
                flow, "expired"
            )
            payload = _ecommerce(rng, shape, checkout, status, clock, number)
        else:
            transaction_type = flow.split("_")[0]
            payload = _app_transaction(rng, shape, checkout, transaction_type, clock, number)
        signal = SIGNAL_OF[flow]
        if signal:
            expected_changes[signal] += 1
        if flow in ("ecommerce_completed", "payment_received", "donation_received"):
            money["payments_cents"] += _cents(checkout["total"])
        when = clock
        refunds = []
        if rng.random() < REFUNDED_SHARE.get(flow, 0):
            refunds = _refunds(rng, checkout["total"])
        for index, amount in enumerate(refunds):
            refund_at = clock + timedelta(hours=rng.randint(1, 72), seconds=index * 37)
            if rng.random() < EARLY_REFUND_SHARE:
                # The payment's first delivery was lost; ATH Móvil's retry arrives after the refund.
                when = max(when, refund_at + timedelta(minutes=rng.randint(1, 30)))
            refund = _refund(rng, _Shape(rng), payload, amount, refund_at, index)
            deliver(refund_at, "refund_sent", refund)
            expected_changes["refund_sent"] += 1
            money["refunds_cents"] += _cents(amount)
        deliver(when, flow, payload)

    timeline.sort(key=lambda item: (item[0], item[1]))
    firsts = [(when, kind, _encode(rng, payload)) for when, _, kind, payload in timeline]
    # Redeliveries: the same bytes again, seconds to hours later.
    stream = [(when, index, kind, body) for index, (when, kind, body) in enumerate(firsts)]
    for index, (when, _, body) in enumerate(firsts):
        if rng.random() < REDELIVERED_SHARE:
            later = when + timedelta(seconds=rng.choice([1, 2, 5, 30, 300, 3600, 7200]))
            stream.append((later, len(firsts) + index, "redelivery", body))
    stream.sort(key=lambda item: (item[0], item[1]))
    deliveries = [Delivery(kind, body) for _, _, kind, body in stream]
    expected = {
        "state_changes": dict(sorted(expected_changes.items())),
        "state_changes_total": sum(expected_changes.values()),
        **money,
    }
    return Corpus(deliveries, expected)


def cold_start_bodies(count: int, seed: int = 99) -> list[str]:
    """New eCommerce completions (production shape), one per cold start, none seen in the corpus."""
    rng = random.Random(seed)
    bodies = []
    for number in range(count):
        shape = _Shape(rng)
        shape.upper = True
        checkout = _checkout(rng, 900_000 + number)
        payload = _ecommerce(rng, shape, checkout, "completed", START, 900_000 + number)
        bodies.append(_encode(rng, payload))
    return bodies


# --- the flows ------------------------------------------------------------------------------------------


class _Shape:
    """How one delivery writes its fields: ATH Móvil's documented shape or one seen in production."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.upper = rng.random() < 0.5  # production: ECOMMERCE / COMPLETED / CANCEL
        self.daily_key = "dailyTransactionId" if self.upper and rng.random() < 0.8 else "dailyTransactionID"
        self.subtotal_key = "subTotal" if self.upper else "subtotal"
        self.money = rng.choice(["string", "string", "number", "float32"])
        self.phone = rng.choice(["digits", "digits", "dashed", "integer"])
        self.extra = rng.random() < 0.1

    def amount(self, value: Decimal) -> Any:
        if self.money == "string":
            return f"{value:.2f}"
        if value == value.to_integral_value():
            return int(value)
        if self.money == "float32":
            # What a single-precision float becomes in JSON: 0.6 -> 0.6000000238418579.
            return struct.unpack("f", struct.pack("f", float(value)))[0]
        return float(value)

    def daily_id(self, number: int) -> Any:
        return number if self.rng.random() < 0.5 else f"{number:04d}"

    def phone_number(self, digits: str) -> Any:
        if self.phone == "integer":
            return int(digits)
        if self.phone == "dashed":
            return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
        return digits

    def date(self, when: datetime) -> str:
        text = when.strftime("%Y-%m-%d %H:%M:%S")
        style = self.rng.random()
        if style < 0.4:
            text += ".0"
        elif style < 0.55:
            digits = self.rng.randint(1, 6)
            text += "." + f"{self.rng.randrange(10**digits):0{digits}d}"
        if self.rng.random() < 0.1:
            text = text.replace(" ", "T")
        return text

    def case(self, text: str) -> str:
        return text.upper() if self.upper else text


def _checkout(rng: random.Random, number: int) -> dict[str, Any]:
    items = []
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 5])):
        name, price = rng.choice(PRODUCTS)
        quantity = rng.randint(1, 4)
        tax = (price * quantity * Decimal("0.115")).quantize(CENT)
        items.append({"name": name, "price": price, "quantity": quantity, "tax": tax})
    if items:
        subtotal = sum((item["price"] * item["quantity"] for item in items), Decimal(0))
        tax = sum((item["tax"] for item in items), Decimal(0))
    else:
        subtotal = Decimal(rng.randint(100, 25000)) / 100
        tax = (subtotal * Decimal("0.115")).quantize(CENT) if rng.random() < 0.5 else Decimal(0)
    total = subtotal + tax
    fee = max(CENT, (total * Decimal("0.025")).quantize(CENT))
    name = rng.choice(NAMES)
    return {
        "items": items,
        "subtotal": subtotal,
        "tax": tax,
        "total": total,
        "fee": fee,
        "name": name,
        "email": name.split()[0].lower().replace("é", "e").replace("ó", "o") + f"{number}@example.com",
        "phone": f"787555{number % 10000:04d}",
        "reference": f"{215070000 + number}-{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}",
        "daily": 1 + number % 9999,
        "metadata_1": f"order-{10000 + number}",
    }


def _ecommerce(
    rng: random.Random, shape: _Shape, checkout: dict[str, Any], status: str, when: datetime, number: int
) -> dict[str, Any]:
    completed = status == "completed"
    ecommerce_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if rng.random() < 0.2:
        ecommerce_id = ecommerce_id.replace("-", "")  # 32 hex digits, as older checkouts send
    if rng.random() < 0.05:
        ecommerce_id += " "  # a stray space, seen in production
    wire_status = {"completed": "COMPLETED", "cancelled": "CANCEL", "expired": "expired"}[status]
    payload: dict[str, Any] = {
        "transactionType": shape.case("ecommerce"),
        "status": wire_status if shape.upper and status != "expired" else status,
        "ecommerceId": ecommerce_id,
        "date": shape.date(when),
        "referenceNumber": checkout["reference"] if completed else "",
        shape.daily_key: shape.daily_id(checkout["daily"]) if completed else "",
        "name": checkout["name"] if completed else "",
        "phoneNumber": shape.phone_number(checkout["phone"]) if completed else "",
        "email": checkout["email"] if completed else "",
        "message": "",
        "total": shape.amount(checkout["total"]),
        shape.subtotal_key: shape.amount(checkout["subtotal"]),
        "tax": shape.amount(checkout["tax"]),
        "fee": shape.amount(checkout["fee"] if completed else Decimal(0)),
        "netAmount": shape.amount(checkout["total"] - checkout["fee"] if completed else Decimal(0)),
        "totalRefundedAmount": shape.amount(Decimal(0)),
        "metadata1": checkout["metadata_1"],
        "metadata2": "tienda-sj",
        "items": [_item(shape, item, index) for index, item in enumerate(checkout["items"])],
    }
    if shape.upper:
        payload.update(businessName="Tienda San Juan", isNonProfit=False)
        if completed:
            payload["transactionDate"] = shape.date(when - timedelta(seconds=3))
            payload["referenceTransactionId"] = ""
    if shape.extra:
        payload["channel"] = "web"  # an unknown field: ignored, kept in the stored body
    return payload


def _app_transaction(
    rng: random.Random,
    shape: _Shape,
    checkout: dict[str, Any],
    transaction_type: str,
    when: datetime,
    number: int,
) -> dict[str, Any]:
    simulated = transaction_type == "simulated"
    return {
        "transactionType": transaction_type,
        "status": "completed",
        "date": shape.date(when),
        "referenceNumber": f"000000-{number:012x}" if simulated else checkout["reference"],
        "dailyTransactionID": shape.daily_id(checkout["daily"]),
        "name": checkout["name"],
        "phoneNumber": shape.phone_number(checkout["phone"]),
        "email": checkout["email"],
        "message": rng.choice(["", "Almuerzo", "Para la causa", "Gracias"]),
        "total": shape.amount(checkout["total"]),
        "tax": shape.amount(Decimal(0)),
        "subtotal": shape.amount(Decimal(0)),
        "fee": shape.amount(checkout["fee"]),
        "netAmount": shape.amount(checkout["total"] - checkout["fee"]),
        "totalRefundedAmount": shape.amount(Decimal(0)),
        "metadata1": "",
        "metadata2": "",
        "items": [],
    }


def _item(shape: _Shape, item: dict[str, Any], index: int) -> dict[str, Any]:
    if shape.upper:
        return {
            "description": item["name"],
            "formattedPrice": "",
            "metadata": f"sku-{index}",
            "name": item["name"],
            "price": float(item["price"]),
            "quantity": item["quantity"],
            "sku": "",
            "tax": float(item["tax"]),
        }
    return {
        "quantity": str(item["quantity"]),
        "tax": f"{item['tax']:.2f}",
        "metadata": f"sku-{index}",
        "name": item["name"],
        "description": item["name"],
        "price": f"{item['price']:.2f}",
    }


def _refunds(rng: random.Random, total: Decimal) -> list[Decimal]:
    if rng.random() < 0.7 or total < 1:
        return [total]
    first = (total * Decimal(rng.randint(20, 60)) / 100).quantize(CENT)
    return [first, total - first] if rng.random() < 0.5 else [first]


def _refund(
    rng: random.Random, shape: _Shape, payment: dict[str, Any], amount: Decimal, when: datetime, index: int
) -> dict[str, Any]:
    name = payment.get("name") or "Cliente"
    return {
        "transactionType": shape.case("refund"),
        "status": shape.case("completed"),
        "date": shape.date(when),
        "referenceNumber": payment["referenceNumber"],
        "dailyTransactionID": str(1 + (rng.getrandbits(12) + index) % 9999),
        "name": " " + name if rng.random() < 0.1 else name,
        "phoneNumber": payment.get("phoneNumber", ""),
        "email": payment.get("email", ""),
        "message": "Devolución",
        "total": f"{amount:.2f}",
        "tax": "0.00",
        "subtotal": "0.00",
        "fee": "0.00",
        "netAmount": "0.00",
        "totalRefundedAmount": "0",
    }


def _encode(rng: random.Random, payload: dict[str, Any]) -> str:
    keys = list(payload)
    if rng.random() < 0.3:
        keys.sort()  # some senders order keys alphabetically
    return json.dumps({key: payload[key] for key in keys}, ensure_ascii=False)


def _cents(value: Decimal) -> int:
    return int(value * 100)
