"""Proofs under concurrency and faults, on every database the suite runs on.

- A ledger of a few hundred checkout stories (completed, cancelled, expired, partial and full refunds, app
  payments, donations), each event delivered two or three times, shuffled, by four Lambda containers
  (processes) at once: the rows equal the ledger to the cent, each signal fires once per state change and
  each SNS message is published once.
- The database connection killed inside the processing transaction (``pg_terminate_backend`` / ``KILL``):
  503, nothing partial remains, and the redelivery applies the change once.
- The database down for a while (a TCP proxy cut in front of it): 503s, nothing half-written, and the same
  container recovers by itself once the database is back.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from athm_core import outbox, processor
from athm_core.models import Notice, OutboxMessage, Payment, Refund, WebhookEvent
from tests.conftest import Topic, database_url
from tests.tcp_proxy import TcpProxy

PROCESSES = 4
STORIES = 200
SEED = 20261127
START = datetime(2026, 11, 20, 8, 0, 0)
CENT = Decimal("0.01")


def _date(minutes: int) -> str:
    return (START + timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S.0")


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT))


def _event(transaction_type: str, status: str, *, total: Decimal, minutes: int, **fields: str) -> str:
    data = {
        "transactionType": transaction_type,
        "status": status,
        "date": _date(minutes),
        "referenceNumber": "",
        "dailyTransactionID": "",
        "name": "Cliente",
        "phoneNumber": "7875550101",
        "email": "cliente@example.com",
        "message": "",
        "total": _money(total),
        "subtotal": _money(total),
        "tax": "0.00",
        "fee": "0.00",
        "netAmount": _money(total),
        "totalRefundedAmount": "0.00",
        "metadata1": "",
        "metadata2": "",
        "items": [],
        **fields,
    }
    return json.dumps(data)


@dataclass
class Expected:
    """What the database and the topic must hold once every delivery has been answered."""

    # key (ecommerce id, or reference number of an app payment/donation) -> row values
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (reference number, daily id) -> amount
    refunds: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    signals: Counter = field(default_factory=Counter)
    events: list[str] = field(default_factory=list)  # one body per distinct event


def build_ledger(rng: random.Random) -> Expected:
    """Checkout stories and the ledger they must leave, decided by ``rng`` alone."""
    expected = Expected()
    for n in range(STORIES):
        total = Decimal(rng.randint(100, 50_000)) / 100
        minutes = n * 3
        reference = f"2150{n:05d}-fault{uuid.UUID(int=rng.getrandbits(128)).hex[:26]}"
        kind = rng.choices(
            ["completed", "cancelled", "expired", "payment", "donation"], weights=[45, 15, 10, 18, 12]
        )[0]
        refunds: list[Decimal] = []
        if kind in ("cancelled", "expired"):
            ecommerce_id = f"fault-{kind}-{n}"
            expected.events.append(
                _event("ecommerce", kind, total=total, minutes=minutes, ecommerceId=ecommerce_id)
            )
            expected.payments[ecommerce_id] = {
                "transaction_type": "ecommerce",
                "status": kind,
                "reference_number": None,
                "total": total,
                "total_refunded_amount": Decimal("0.00"),
            }
            expected.signals[f"payment_{kind}"] += 1
            continue
        if kind == "completed":
            key = f"fault-completed-{n}"
            expected.events.append(
                _event(
                    "ecommerce",
                    "completed",
                    total=total,
                    minutes=minutes,
                    ecommerceId=key,
                    referenceNumber=reference,
                    dailyTransactionID=f"{n % 10_000:04d}",
                )
            )
            expected.signals["payment_completed"] += 1
            shape = rng.choices(["none", "partial", "full", "full-in-parts"], weights=[40, 30, 20, 10])[0]
        else:
            key = reference
            expected.events.append(
                _event(
                    kind,
                    "completed",
                    total=total,
                    minutes=minutes,
                    referenceNumber=reference,
                    dailyTransactionID=f"{n % 10_000:04d}",
                )
            )
            expected.signals[f"{kind}_received"] += 1
            shape = rng.choices(["none", "partial", "full"], weights=[70, 20, 10])[0]
        if shape == "partial":
            left = total - CENT
            for _ in range(rng.randint(1, 2)):
                if left < CENT:
                    break
                amount = Decimal(rng.randint(1, int(left * 100))) / 100
                refunds.append(amount)
                left -= amount
        elif shape == "full":
            refunds = [total]
        elif shape == "full-in-parts":
            first = Decimal(rng.randint(1, int(total * 100) - 1)) / 100 if total > CENT else total
            refunds = [first, total - first] if first < total else [total]
        for k, amount in enumerate(refunds, start=1):
            daily = f"{k}"
            expected.events.append(
                _event(
                    "refund",
                    "completed",
                    total=amount,
                    minutes=minutes + k,
                    referenceNumber=reference,
                    dailyTransactionID=daily,
                )
            )
            expected.refunds[(reference, daily)] = amount
            expected.signals["refund_sent"] += 1
        expected.payments[key] = {
            "transaction_type": "ecommerce" if kind == "completed" else kind,
            "status": "completed",
            "reference_number": reference,
            "total": total,
            "total_refunded_amount": sum(refunds, Decimal("0.00")),
        }
    return expected


def shuffled_deliveries(rng: random.Random, events: list[str]) -> list[str]:
    """Every event two or three times, in any order: refunds may come before their payment. A third of the
    events come as a burst of copies side by side, which lands them on different processes at once."""
    units: list[list[str]] = []
    for body in events:
        copies = [body] * rng.choice([2, 3])
        if rng.random() < 1 / 3:
            units.append(copies)
        else:
            units += [[copy] for copy in copies]
    rng.shuffle(units)
    return [body for unit in units for body in unit]


def new_topic(moto_server: dict[str, str]) -> Topic:
    return Topic(f"athm-{uuid.uuid4().hex[:12]}", endpoint_url=moto_server["AWS_ENDPOINT_URL"])


def test_a_shuffled_ledger_from_four_processes_ends_exact_to_the_cent(start_child, moto_server):
    rng = random.Random(SEED)
    expected = build_ledger(rng)
    deliveries = shuffled_deliveries(rng, expected.events)
    assert STORIES >= 200 and len(deliveries) >= 2 * len(expected.events)

    topic = new_topic(moto_server)
    children = [start_child(ATHM_SNS_TOPIC_ARN=topic.arn, **moto_server) for _ in range(PROCESSES)]
    # A fifth container runs the relay all along, taking over any notice it can lock (no grace period).
    relay = start_child(ATHM_SNS_TOPIC_ARN=topic.arn, **moto_server)
    for child in [*children, relay]:
        child.wait_ready()

    fired: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    unavailable: list[str] = []  # deliveries answered 503: ATH Móvil delivers them again
    for start in range(0, len(deliveries), PROCESSES):
        batch = deliveries[start : start + PROCESSES]
        for child, body in zip(children, batch, strict=False):  # all sent before any answer is read
            child.send(body)
        relay.send_relay(retry_now=True)
        results = [child.receive() for child, _ in zip(children, batch, strict=False)]
        fired.update(relay.receive()["signals"])
        for body, result in zip(batch, results, strict=True):
            fired.update(result["signals"])  # a 503 after commit has announced its change already
            if result["status"] == 503 and result["answer"]["error"] == "database_unavailable":
                unavailable.append(body)
                continue
            assert result["status"] == 200, result
            outcomes[result["answer"]["outcome"]] += 1
    for body in unavailable:  # the redelivery of each 503, as ATH Móvil would send it
        result = children[0].request(body)
        assert result["status"] == 200, result
        fired.update(result["signals"])
        outcomes[result["answer"]["outcome"]] += 1
    # A relay run after the storm: whatever a webhook's own publish left (none is expected) goes now.
    children[0].send_relay(retry_now=True)
    relay_report = children[0].receive()
    fired.update(relay_report["signals"])

    # Rows: exactly the ledger, to the cent.
    payments = {p.ecommerce_id or p.reference_number: p for p in Payment.objects.all()}
    assert set(payments) == set(expected.payments)
    for key, values in expected.payments.items():
        payment = payments[key]
        actual = {name: getattr(payment, name) for name in values}
        assert actual == values, key
        assert payment.total_refunded_amount.as_tuple().exponent == -2
    refunds = Refund.objects.select_related("payment")
    assert {(r.reference_number, str(r.daily_transaction_id)): r.amount for r in refunds} == expected.refunds
    assert all(r.payment is not None and r.payment.reference_number == r.reference_number for r in refunds)
    for key, values in expected.payments.items():
        linked = sum((r.amount for r in refunds if r.payment_id == payments[key].pk), Decimal("0.00"))
        assert linked == values["total_refunded_amount"], key

    # Each delivery recorded once; each distinct event applied once, every other copy a duplicate.
    recorded = WebhookEvent.objects.count()
    assert WebhookEvent.objects.filter(outcome="applied").count() == len(expected.events)
    assert WebhookEvent.objects.filter(outcome="duplicate").count() == recorded - len(expected.events)
    assert sum(outcomes.values()) == len(deliveries) <= recorded <= len(deliveries) + len(unavailable)
    if not unavailable:
        assert outcomes == {
            "applied": len(expected.events),
            "duplicate": len(deliveries) - len(expected.events),
        }

    # Receivers, summed over the five containers: called once per state change, whoever called them.
    assert fired == expected.signals
    assert not Notice.objects.filter(delivered_at=None).exists()
    assert relay_report["notices"]["pending"] == 0

    # SNS: one message per state change, nothing left pending, and each message published once.
    messages = topic.messages()
    unique = {m.body["id"]: m for m in messages}
    assert Counter(m.body["type"] for m in unique.values()) == expected.signals
    assert set(unique) == {str(key) for key in OutboxMessage.objects.values_list("event_id", flat=True)}
    assert not OutboxMessage.objects.filter(published_at=None).exists()
    assert relay_report["outbox"]["failed"] == 0 and relay_report["outbox"]["pending"] == 0, relay_report
    refund_messages = Counter(
        (m.body["refund"]["reference_number"], m.body["refund"]["amount"])
        for m in unique.values()
        if m.body["type"] == "refund_sent"
    )
    assert refund_messages == Counter((ref, _money(amount)) for (ref, _), amount in expected.refunds.items())
    for child in [*children, relay]:
        assert child.close() == 0, child.log()
    twice = Counter(m.body["id"] for m in messages) - Counter(list(unique))
    problems = []
    # Both once happened on MariaDB: deadlocks through secondary indexes (the outbox's pending index,
    # the refunds' payment index), now avoided by locking rows by primary key only.
    if unavailable:
        problems.append(f"{len(unavailable)} deliveries answered 503 with the database up")
    if twice:
        problems.append(f"{len(twice)} of {len(unique)} outbox messages were published twice")
    assert not problems, problems


# --- the connection killed inside the transaction ---------------------------------------------------


def _server_database() -> str:
    if connection.vendor == "sqlite":
        pytest.skip("SQLite is a file, not a server: there is no database connection to kill or cut")
    return connection.vendor


class Killer:
    """Kills a database session from a connection of its own, and waits until the server has ended it."""

    def __init__(self) -> None:
        self.vendor = _server_database()
        database = connection.settings_dict
        options = {"host": database["HOST"] or "127.0.0.1", "user": database["USER"]}
        if self.vendor == "postgresql":
            import psycopg

            self.conn = psycopg.connect(
                **options,
                port=int(database["PORT"] or 5432),
                dbname=database["NAME"],
                password=database["PASSWORD"] or None,
                autocommit=True,
            )
        else:
            import pymysql

            self.conn = pymysql.connect(
                **options,
                port=int(database["PORT"] or 3306),
                database=database["NAME"],
                password=database["PASSWORD"] or "",
                autocommit=True,
            )
        self.killed: list[int] = []

    def session_of(self, django_connection) -> int:
        raw = django_connection.connection
        return raw.info.backend_pid if self.vendor == "postgresql" else raw.thread_id()

    def kill(self, session: int) -> None:
        with self.conn.cursor() as cursor:
            if self.vendor == "postgresql":
                # The two-argument form waits (up to 5 s) until the backend has really gone.
                cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [session])
                assert cursor.fetchone()[0] is True
            else:
                cursor.execute(f"KILL {int(session)}")
                for _ in range(100):
                    cursor.execute(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", [session]
                    )
                    if cursor.fetchone()[0] == 0:
                        break
                    time.sleep(0.05)
                else:
                    raise AssertionError(f"MariaDB session {session} is still there after KILL")
        self.killed.append(session)

    def kill_current(self) -> None:
        """Kill the session of the calling thread's Django connection, from inside its transaction."""
        from django.db import connection as current

        assert current.in_atomic_block, "the kill must land inside the processing transaction"
        self.kill(self.session_of(current))

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def killer():
    killer = Killer()
    yield killer
    killer.close()


def _body(transaction_type: str, **fields: Any) -> str:
    return _event(transaction_type, "completed", **fields)


COMPLETED = _body(
    "ecommerce",
    total=Decimal("41.37"),
    minutes=0,
    ecommerceId="killed-checkout",
    referenceNumber="215077001-killed0000000000000000000001",
    dailyTransactionID="0101",
)
REFUND = _body(
    "refund",
    total=Decimal("12.19"),
    minutes=5,
    referenceNumber="215077001-killed0000000000000000000001",
    dailyTransactionID="7",
)


def _state() -> dict[str, Any]:
    payment = Payment.objects.filter(ecommerce_id="killed-checkout").first()
    return {
        "payment": (payment.status, payment.total_refunded_amount) if payment else None,
        "refunds": [(r.amount, r.payment_id is not None) for r in Refund.objects.all()],
        "events": sorted(WebhookEvent.objects.values_list("event_type", "outcome")),
        "outbox": sorted(OutboxMessage.objects.values_list("event_type", flat=True)),
    }


@pytest.mark.parametrize("where", ["payment-row-written", "refund-before-outbox", "linking-waiting-refund"])
def test_a_connection_killed_mid_transaction_leaves_nothing_partial(
    where, killer, lambda_handler, signal_log, make_topic, monkeypatch
):
    topic = make_topic()

    if where == "payment-row-written":
        # The payment row is saved, the webhook event not yet: the kill comes between them.
        original = processor._record

        def kill_then_record(*args, **kwargs):
            killer.kill_current()
            return original(*args, **kwargs)

        before: dict[str, Any] = {"payment": None, "refunds": [], "events": [], "outbox": []}
        first = COMPLETED
        monkeypatch.setattr(processor, "_record", kill_then_record)
    elif where == "refund-before-outbox":
        # The refund row, the payment's new refunded total and the webhook event are written; the outbox
        # message is next.
        assert lambda_handler.post(COMPLETED).json()["outcome"] == "applied"
        before = _state()
        original = outbox.add

        def kill_then_add(messages):
            killer.kill_current()
            return original(messages)

        first = REFUND
        monkeypatch.setattr(outbox, "add", kill_then_add)
    else:
        # The refund came first and waits. The payment's transaction commits, then linking the refund
        # (its own transaction, after that commit) is killed half-way: the payment stands, the link does not.
        assert lambda_handler.post(REFUND).json()["outcome"] == "applied"
        original = Refund.objects.bulk_update

        def kill_then_link(*args, **kwargs):
            killer.kill_current()
            return original(*args, **kwargs)

        first = COMPLETED
        monkeypatch.setattr(Refund.objects, "bulk_update", kill_then_link)

    signal_log.calls.clear()
    response = lambda_handler.post(first)
    if where == "linking-waiting-refund":
        # The payment's change and its notice committed before the kill: 200, and the link is left to the
        # redelivery or the relay.
        assert response.status == 200 and response.json()["outcome"] == "applied", response
    else:
        assert response.status == 503, response
        assert response.json()["error"] == "database_unavailable"
    assert len(killer.killed) == 1
    monkeypatch.undo()

    if where == "linking-waiting-refund":
        # The payment's own change committed before the kill, and was announced once; the refund waits.
        assert _state() == {
            "payment": ("completed", Decimal("0.00")),
            "refunds": [(Decimal("12.19"), False)],
            "events": [("ecommerce.completed", "applied"), ("refund.sent", "applied")],
            "outbox": ["payment_completed"],
        }
        assert signal_log.names() == ["payment_completed"]
    else:
        assert _state() == before
        assert signal_log.calls == []

    # The redelivery (on a new connection: the dead one was dropped) finishes the job, once.
    signal_log.calls.clear()
    redelivered = lambda_handler.post(first)
    assert redelivered.status == 200, redelivered
    if where == "linking-waiting-refund":
        assert redelivered.json()["outcome"] == "duplicate"
        assert signal_log.names() == ["refund_sent"]
    else:
        assert redelivered.json()["outcome"] == "applied"
        assert signal_log.names() == ["payment_completed" if first is COMPLETED else "refund_sent"]
    final = _state()
    assert final["payment"] == (
        ("completed", Decimal("0.00")) if where == "payment-row-written" else ("completed", Decimal("12.19"))
    )
    assert all(linked for _, linked in final["refunds"])

    # Once more: only a duplicate, nothing fires.
    signal_log.calls.clear()
    assert lambda_handler.post(first).json()["outcome"] == "duplicate"
    assert signal_log.calls == []
    assert _state()["payment"] == final["payment"] and _state()["refunds"] == final["refunds"]

    # SNS got each state change once, and the outbox has nothing left to send.
    expected = (
        {"payment_completed": 1}
        if where == "payment-row-written"
        else {"payment_completed": 1, "refund_sent": 1}
    )
    messages = topic.messages()
    assert Counter(m.body["type"] for m in messages) == expected
    assert len({m.body["id"] for m in messages}) == len(messages)
    assert not OutboxMessage.objects.filter(published_at=None).exists()


# --- the database down for a while --------------------------------------------------------------------


def test_the_database_down_for_a_while_503s_then_recovers_without_a_restart(
    child_env, start_child, moto_server
):
    vendor = _server_database()
    database = connection.settings_dict
    real_port = int(database["PORT"] or {"postgresql": 5432, "mysql": 3306}[vendor])
    proxy = TcpProxy(real_port, database["HOST"] or "127.0.0.1")
    try:
        url = database_url(host="127.0.0.1", port=proxy.port)
        topic = new_topic(moto_server)
        child = start_child(
            DATABASE_URL=url, DB_CONNECT_TIMEOUT="2", ATHM_SNS_TOPIC_ARN=topic.arn, **moto_server
        )
        child.wait_ready()
        first_pid = child.process.pid

        completed = _body(
            "ecommerce",
            total=Decimal("99.99"),
            minutes=0,
            ecommerceId="outage-checkout",
            referenceNumber="215078001-outage00000000000000000000001",
            dailyTransactionID="0201",
        )
        during = [
            _body("refund", total=Decimal("0.99"), minutes=3,
                  referenceNumber="215078001-outage00000000000000000000001", dailyTransactionID="1"),
            _body("ecommerce", total=Decimal("5.05"), minutes=4, ecommerceId="outage-second",
                  referenceNumber="215078002-outage00000000000000000000002", dailyTransactionID="0202"),
            _body("donation", total=Decimal("20.00"), minutes=5,
                  referenceNumber="215078003-outage00000000000000000000003", dailyTransactionID="0203"),
        ]  # fmt: skip

        assert child.request(path="/health", method="GET")["status"] == 200
        warm = child.request(completed)
        assert warm["status"] == 200 and warm["signals"] == {"payment_completed": 1}, warm
        assert proxy.open_connections >= 1  # the container's connection goes through the proxy

        proxy.cut()
        for attempt in range(2):  # ATH Móvil (or a replay) tries again while the database is still down
            for body in during:
                began = time.monotonic()
                answer = child.request(body)
                assert answer["status"] == 503, (attempt, answer, child.log())
                assert answer["answer"]["error"] == "database_unavailable"
                assert answer["signals"] == {}
                assert time.monotonic() - began < 10, "a 503 must come quickly (DB_CONNECT_TIMEOUT=2)"
        assert child.request(path="/health", method="GET")["status"] == 503
        # Nothing of the failed deliveries was written (this process talks to the database directly).
        assert Payment.objects.count() == 1 and Refund.objects.count() == 0
        assert list(WebhookEvent.objects.values_list("outcome", flat=True)) == ["applied"]
        assert Payment.objects.get().total_refunded_amount == Decimal("0.00")

        proxy.restore()
        # The same container, never restarted, reconnects by itself.
        assert child.request(path="/health", method="GET")["status"] == 200
        fired: Counter[str] = Counter()
        for body in during:
            answer = child.request(body)
            assert answer["status"] == 200 and answer["answer"]["outcome"] == "applied", answer
            fired.update(answer["signals"])
        assert fired == {"refund_sent": 1, "payment_completed": 1, "donation_received": 1}
        for body in [completed, *during]:
            answer = child.request(body)
            assert answer["answer"]["outcome"] == "duplicate" and answer["signals"] == {}, answer
        assert child.process.pid == first_pid and child.process.poll() is None

        payment = Payment.objects.get(ecommerce_id="outage-checkout")
        assert payment.total_refunded_amount == Decimal("0.99")
        assert Refund.objects.get().payment == payment
        assert Payment.objects.count() == 3
        messages = topic.messages()
        assert Counter(m.body["type"] for m in messages) == {
            "payment_completed": 2,
            "refund_sent": 1,
            "donation_received": 1,
        }
        assert len({m.body["id"] for m in messages}) == len(messages)
        assert not OutboxMessage.objects.filter(published_at=None).exists()
        assert child.close() == 0, child.log()
    finally:
        proxy.cut()
