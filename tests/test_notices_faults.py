"""The proofs of issue 13: a committed state change reaches every receiver exactly once, whatever fails
after its commit.

Each test first reproduces one failure, then heals it the way production does (the redelivery ATH Móvil
sends, or one run of the relay), and then proves with a table that the test's receivers write
(``tests.heard``: one ``Heard`` row per receiver call that returned) that every receiver handled every
state change exactly once, and that the payment and refund rows equal what was sent:

1. The commit's acknowledgement lost (a proxy on 127.0.0.1 drops the connection right after forwarding
   ``COMMIT``): the webhook answers 503 with the payment committed; the redelivery (a duplicate), or one
   relay run, delivers its notice and links the refund that waited for it.
2. The database session killed while a receiver runs: the webhook still answers 200 (the change
   committed) and the payment's notice stays pending; the redelivery or one relay run finishes it without
   calling again the receiver that had returned.
3. The process dying after the commit (``os._exit`` in a receiver): a new process, the relay or the
   redelivery, finishes; the receiver that had returned before the death is not called again.

4. ``athm reprocess`` and ``athm reconcile`` from real subprocesses with ``ATHM_RECEIVERS`` set: their
   changes reach the receivers once, and running them again changes and announces nothing.
5. A receiver raising with NUL in its message: the failure is recorded (PostgreSQL included), the webhook
   answers 200, and ``athm redispatch`` later delivers it once.

In 2 and 3 a refund waited for the payment: it ends linked and announced once, whether the interrupted
delivery linked it (the interruption point is checked to be consistent either way: every ``Heard`` row
matches a receiver marked delivered on its notice, and no other) or the healing did.

The webhooks run in child processes (``tests.child``: one Lambda container each) started with
``ATHM_RECEIVERS=tests.heard.receivers`` and ``ATHM_INSTALLED_APPS=tests.heard``; fault receivers are
switched on by their ``HEARD_*`` marker variables (see :mod:`tests.heard.receivers`). The lost commit and
the killed session need a database server: they skip on SQLite.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from athm_core import processor
from athm_core.models import Payment, Refund, WebhookEvent
from athm_core.payloads import parse
from tests.conftest import ROOT, database_url, sample, sample_data
from tests.fake_athm import fake_athm_fixture  # noqa: F401
from tests.heard import receivers as heard_receivers
from tests.heard.models import Heard
from tests.tcp_proxy import TcpProxy
from tests.test_local import athm_command
from tests.test_reconcile import LOST_ECOMMERCE_ID, PATH, PRIVATE, PUBLIC, lost_payment, lost_refund

HEARD_ENV = {"ATHM_RECEIVERS": "tests.heard.receivers", "ATHM_INSTALLED_APPS": "tests.heard"}
RECEIVER = "tests.heard.receivers.{}".format

# The ledger most tests send: a refund that arrives before its payment (it waits), the payment, and a
# second refund after everything has healed.
ECOMMERCE_ID = sample_data("ecommerce_completed.production")["ecommerceId"]
PAYMENT = sample("ecommerce_completed.production")
EARLY_REFUND = json.dumps(
    {**sample_data("refund_sent.production"), "total": "10.00", "dailyTransactionID": "3"}
)
LATE_REFUND = json.dumps(
    {
        **sample_data("refund_sent.production"),
        "total": "5.50",
        "dailyTransactionID": "4",
        "date": "2026-11-22 10:15:00",
    }
)
TOTAL = Decimal("26.00")
REFUNDS = {3: Decimal("10.00"), 4: Decimal("5.50")}


# --- helpers -----------------------------------------------------------------------------------------------


def _server_database() -> str:
    if connection.vendor == "sqlite":
        pytest.skip("SQLite is a file, not a server: there is no connection to drop after COMMIT or to kill")
    return connection.vendor


def heard_child(start_child, tmp_path: Path, *, url: str | None = None, **markers: str):
    """A started child process (one Lambda container) with the counting receivers and the given fault
    receivers (``exit_once="marker-name"``...: the marker files live in ``tmp_path``). Not yet ready:
    start several, then ``wait_ready()`` each, so that their cold starts overlap."""
    env = dict(HEARD_ENV)
    for fault, name in markers.items():
        env[heard_receivers.FAULTS[fault]] = str(tmp_path / name)
    if url:
        env["DATABASE_URL"] = url
    return start_child(**env)


def athm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``athm ARGS`` in a subprocess of its own."""
    return subprocess.run(
        [*athm_command(), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def outcomes(stdout: str) -> list[str]:
    """The status of each event in ``athm reprocess``'s output ("event 7: applied (recorded as ...)");
    the log lines that share stdout are left out."""
    return [line.split(": ")[1].split(" ")[0] for line in stdout.splitlines() if line.startswith("event ")]


def heard() -> Counter:
    """Receiver calls that returned, per (receiver, signal, payment, refund)."""
    return Counter(Heard.objects.values_list("receiver", "signal", "payment_id", "refund_id"))


def once_each(changes: list[tuple], receivers: list[str]) -> Counter:
    """What ``heard()`` must be: each receiver once per state change."""
    return Counter({(receiver, *change): 1 for receiver in receivers for change in changes})


def assert_ledger(
    *, ecommerce_id: str = ECOMMERCE_ID, total: Decimal = TOTAL, refunds: dict[int, Decimal]
) -> list[tuple]:
    """The payment and refund rows equal the ledger; returns its state changes, each
    ``(signal, payment_id, refund_id)``: the payment's completion, then each refund."""
    [payment] = Payment.objects.all()
    assert (payment.ecommerce_id, payment.status, payment.total, payment.total_refunded_amount) == (
        ecommerce_id,
        Payment.Status.COMPLETED,
        total,
        sum(refunds.values(), Decimal("0.00")),
    )
    rows = Refund.objects.order_by("daily_transaction_id")
    assert {r.daily_transaction_id: (r.amount, r.payment_id) for r in rows} == {
        daily: (amount, payment.pk) for daily, amount in refunds.items()
    }
    assert all(r.linked_at is not None for r in rows)
    return [("payment_completed", payment.pk, None)] + [("refund_sent", payment.pk, r.pk) for r in rows]


def assert_notices_delivered(changes: list[tuple], receivers: list[str]) -> list:
    """One notice per state change, every one delivered to every receiver, and each receiver's one
    ``Heard`` row per notice carries that notice's id. Returns the notices, in the order of ``changes``."""
    from athm_core.models import Notice

    notices = {(n.signal, n.payment_id, n.refund_id): n for n in Notice.objects.all()}
    assert Notice.objects.count() == len(changes) and set(notices) == set(changes)
    pending = [(n.signal, n.receivers) for n in notices.values() if n.delivered_at is None]
    assert pending == []
    for notice in notices.values():
        names = [entry["receiver"] for entry in notice.receivers]
        assert {RECEIVER(name) for name in receivers} <= set(names), names
        assert {entry["state"] for entry in notice.receivers} == {"delivered"}, notice.receivers
        assert "error" not in str(notice.receivers)
    assert Counter(Heard.objects.values_list("receiver", "notice_id")) == Counter(
        {(receiver, notice.notice_id): 1 for receiver in receivers for notice in notices.values()}
    )
    return [notices[change] for change in changes]


def notices_at_failure() -> dict[tuple, dict[str, str]]:
    """The notices as the failure left them: ``{(signal, payment, refund): {receiver: state}}``, for the
    receivers of ``tests.heard`` (the children's own counting receiver is left out)."""
    from athm_core.models import Notice

    prefix = RECEIVER("")
    return {
        (n.signal, n.payment_id, n.refund_id): {
            e["receiver"].removeprefix(prefix): e["state"] if n.delivered_at is None else "notice delivered"
            for e in n.receivers
            if e["receiver"].startswith(prefix)
        }
        for n in Notice.objects.all()
    }


def assert_interrupted(payment: Payment, fault: str) -> int:
    """What a delivery interrupted in the payment's receivers leaves, however far it got; returns how many
    notices it left unfinished.

    - The payment's ``payment_completed`` notice is unfinished: ``count`` returned, ``fault`` did not.
    - The ``Heard`` rows are exactly the receivers marked delivered on their notices (a receiver's writes
      commit with its state): nothing heard twice, nothing heard and forgotten.
    - The refund that waited for the payment is still waiting (linking comes after the payment's
      receivers), or linked, counted on the payment, and announced by a notice of its own.
    """
    from athm_core.models import Notice

    prefix = RECEIVER("")
    notices = list(Notice.objects.all())
    marked = Counter(
        (entry["receiver"].removeprefix(prefix), notice.notice_id)
        for notice in notices
        for entry in notice.receivers
        if entry["receiver"].startswith(prefix) and entry["state"] == "delivered"
    )
    assert Counter(Heard.objects.values_list("receiver", "notice_id")) == marked
    heard_now = heard()
    assert heard_now[("count", "payment_completed", payment.pk, None)] == 1, heard_now
    assert heard_now[(fault, "payment_completed", payment.pk, None)] == 0, heard_now
    completed = notices_at_failure()[("payment_completed", payment.pk, None)]
    assert completed["count"] == "delivered" and completed[fault] in ("pending", "failed"), completed
    refund = Refund.objects.get()
    announced = [(n.payment_id, n.refund_id) for n in notices if n.signal == "refund_sent"]
    if refund.payment_id is None:
        assert (payment.total_refunded_amount, announced) == (Decimal("0.00"), [])
    else:
        assert (refund.payment_id, payment.total_refunded_amount) == (payment.pk, refund.amount)
        assert announced == [(payment.pk, refund.pk)]
    return sum(notice.delivered_at is None for notice in notices)


def wait_until_no_row_is_locked(model) -> None:
    """Block until every row lock on ``model``'s table is released: a process that died inside a
    transaction holds its locks until the server has seen its connection go and rolled it back. (A
    waiting ``SELECT ... FOR UPDATE``, answered when that is done; nothing to wait for on SQLite.)"""
    if connection.vendor == "sqlite":
        return
    with transaction.atomic():
        list(model.objects.select_for_update().values_list("pk", flat=True))


def record_failed(body: str) -> WebhookEvent:
    """A delivery of ``body`` kept as failed, as a bug in the processor would have left it."""
    return processor.record(body, WebhookEvent.Outcome.FAILED, error="Traceback ...", event=parse(body))


def relay_once(child) -> dict[str, Any]:
    """One relay run in ``child`` (``handler.relay.run(retry_now=True)``): its report."""
    child.send_relay(retry_now=True)
    return child.receive()


# --- 1. the commit's acknowledgement lost ------------------------------------------------------------------


@pytest.mark.parametrize("heal", ["redelivery", "relay"])
def test_a_lost_commit_answer_is_healed_by_the_redelivery_or_one_relay_run(start_child, tmp_path, heal):
    vendor = _server_database()
    database = connection.settings_dict
    port = int(database["PORT"] or {"postgresql": 5432, "mysql": 3306}[vendor])
    proxy = TcpProxy(port, database["HOST"] or "127.0.0.1")
    try:
        behind_proxy = database_url(host="127.0.0.1", port=proxy.port)
        webhook = heard_child(start_child, tmp_path, url=behind_proxy)
        relay = heard_child(start_child, tmp_path) if heal == "relay" else None
        for child in filter(None, [webhook, relay]):
            child.wait_ready()

        early = webhook.request(EARLY_REFUND)
        assert early["status"] == 200 and early["answer"]["outcome"] == "applied", early

        # The failure: the server commits the payment; the webhook never hears it did.
        proxy.drop_after_commit()
        lost = webhook.request(PAYMENT)
        assert proxy.commit_dropped.is_set()
        assert lost["status"] == 503 and lost["answer"]["error"] == "database_unavailable", lost
        assert lost["signals"] == {}
        payment = Payment.objects.get()
        assert payment.status == Payment.Status.COMPLETED  # committed all the same
        assert Refund.objects.get().payment_id is None  # the link comes after the commit: not made
        assert heard() == Counter()
        assert notices_at_failure() == {("payment_completed", payment.pk, None): {"count": "pending"}}

        if heal == "redelivery":
            healed = webhook.request(PAYMENT)
            assert healed["status"] == 200 and healed["answer"]["outcome"] == "duplicate", healed
            assert healed["signals"] == {"payment_completed": 1, "refund_sent": 1}
        else:
            report = relay_once(relay)
            assert report["notices"]["linked"] == 1 and report["notices"]["delivered"] == 2, report
            assert report["notices"]["pending"] == 0 and report["notices"]["failed"] == 0, report
            assert report["signals"] == {"payment_completed": 1, "refund_sent": 1}
            # ATH Móvil's redelivery still comes: a duplicate that calls nobody again.
            again = webhook.request(PAYMENT)
            assert again["answer"]["outcome"] == "duplicate" and again["signals"] == {}, again

        late = webhook.request(LATE_REFUND)
        assert late["answer"]["outcome"] == "applied" and late["signals"] == {"refund_sent": 1}, late
        changes = assert_ledger(refunds=REFUNDS)
        assert heard() == once_each(changes, ["count"])
        assert_notices_delivered(changes, ["count"])
        for child in filter(None, [webhook, relay]):
            assert child.close() == 0, child.log()
    finally:
        proxy.cut()


# --- 2. the database gone while a receiver runs --------------------------------------------------------


@pytest.mark.parametrize("heal", ["redelivery", "relay"])
def test_a_database_blip_while_the_receivers_run_answers_200_and_is_finished_once(
    start_child, tmp_path, heal
):
    _server_database()
    webhook = heard_child(start_child, tmp_path, kill_session_once="kill.marker")
    relay = heard_child(start_child, tmp_path, kill_session_once="kill.marker") if heal == "relay" else None
    for child in filter(None, [webhook, relay]):
        child.wait_ready()

    assert webhook.request(EARLY_REFUND)["answer"]["outcome"] == "applied"

    # The failure: count returns, then kill_session_once kills the session it runs on and fails.
    blip = webhook.request(PAYMENT)
    assert heard_receivers.marker_pid(tmp_path / "kill.marker") == webhook.process.pid
    assert blip["status"] == 200 and blip["answer"]["outcome"] == "applied", (blip, webhook.log())
    payment = Payment.objects.get()
    assert payment.status == Payment.Status.COMPLETED
    unfinished = assert_interrupted(payment, "kill_session_once")

    if heal == "redelivery":
        healed = webhook.request(PAYMENT)
        assert healed["status"] == 200 and healed["answer"]["outcome"] == "duplicate", healed
    else:
        report = relay_once(relay)
        # The notices left unfinished, and those of the refund it linked, if the delivery had not.
        notices = report["notices"]
        assert notices["delivered"] == unfinished + notices["linked"] and notices["pending"] == 0, report
        assert notices["failed"] == 0, report
        again = webhook.request(PAYMENT)
        assert again["answer"]["outcome"] == "duplicate" and again["signals"] == {}, again

    late = webhook.request(LATE_REFUND)
    assert late["answer"]["outcome"] == "applied" and late["signals"] == {"refund_sent": 1}, late
    changes = assert_ledger(refunds=REFUNDS)
    assert heard() == once_each(changes, ["count", "kill_session_once"])
    assert_notices_delivered(changes, ["count", "kill_session_once"])
    for child in filter(None, [webhook, relay]):
        assert child.close() == 0, child.log()


# --- 3. the process dead after the commit ------------------------------------------------------------------


@pytest.mark.parametrize("heal", ["relay", "redelivery"])
def test_a_process_that_dies_after_the_commit_is_finished_by_a_new_process(start_child, tmp_path, heal):
    from athm_core.models import Notice

    dying = heard_child(start_child, tmp_path, exit_once="exit.marker")
    # The container that takes over: the relay function's, or the next webhook container.
    successor = heard_child(start_child, tmp_path, exit_once="exit.marker")
    for child in (dying, successor):
        child.wait_ready()

    assert dying.request(EARLY_REFUND)["answer"]["outcome"] == "applied"

    # The failure: count returns, then exit_once ends the process in the middle of the delivery.
    dying.send(PAYMENT)
    with pytest.raises(RuntimeError, match="no answer"):
        dying.receive()
    assert dying.process.wait(timeout=30) == heard_receivers.EXIT_CODE
    assert heard_receivers.marker_pid(tmp_path / "exit.marker") == dying.process.pid
    payment = Payment.objects.get()
    assert payment.status == Payment.Status.COMPLETED
    wait_until_no_row_is_locked(Notice)  # the dead process's transaction, rolled back by the server
    unfinished = assert_interrupted(payment, "exit_once")

    if heal == "relay":
        report = relay_once(successor)
        # The notices left unfinished, and those of the refund it linked, if the delivery had not.
        notices = report["notices"]
        assert notices["delivered"] == unfinished + notices["linked"] and notices["pending"] == 0, report
        assert notices["failed"] == 0, report
        again = successor.request(PAYMENT)
        assert again["answer"]["outcome"] == "duplicate" and again["signals"] == {}, again
    else:
        healed = successor.request(PAYMENT)
        assert healed["status"] == 200 and healed["answer"]["outcome"] == "duplicate", healed

    late = successor.request(LATE_REFUND)
    assert late["answer"]["outcome"] == "applied" and late["signals"] == {"refund_sent": 1}, late
    changes = assert_ledger(refunds=REFUNDS)
    assert heard() == once_each(changes, ["count", "exit_once"])
    assert set(Heard.objects.filter(receiver="exit_once").values_list("pid", flat=True)) == {
        successor.process.pid
    }
    assert_notices_delivered(changes, ["count", "exit_once"])
    assert successor.close() == 0, successor.log()


# --- 4. the athm commands in subprocesses of their own -------------------------------------------------


def test_athm_reprocess_in_a_subprocess_reaches_every_receiver_once(child_env):
    env = {**child_env, **HEARD_ENV, "ATHM_VERIFY": "0"}
    # Three deliveries kept as failed: stored bodies to reprocess (the refund before its payment).
    failed = [record_failed(body).pk for body in (EARLY_REFUND, PAYMENT, LATE_REFUND)]

    first = athm(env, "reprocess", *map(str, failed))
    assert first.returncode == 0, first.stderr
    assert outcomes(first.stdout) == ["applied"] * 3
    changes = assert_ledger(refunds=REFUNDS)
    assert heard() == once_each(changes, ["count"])
    assert os.getpid() not in set(Heard.objects.values_list("pid", flat=True))  # heard in the subprocess

    # Again: only duplicates, and nobody hears anything twice.
    again = athm(env, "reprocess", *map(str, failed))
    assert again.returncode == 0, again.stderr
    assert outcomes(again.stdout) == ["duplicate"] * 3
    nothing = athm(env, "reprocess", "--failed")
    assert nothing.returncode == 0 and "0 event(s) reprocessed" in nothing.stdout, nothing
    assert assert_ledger(refunds=REFUNDS) == changes
    assert heard() == once_each(changes, ["count"])
    assert_notices_delivered(changes, ["count"])


def test_athm_reconcile_in_a_subprocess_reaches_every_receiver_once(fake_athm, child_env):
    fake_athm.answer(PATH, 200, [lost_refund(), lost_payment()])  # the refund listed first
    env = {**child_env, **HEARD_ENV, **fake_athm.environment(PUBLIC, PRIVATE)}

    first = athm(env, "reconcile", "--from", "2026-11-20", "--to", "2026-11-21")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[1].startswith("created 2,"), first.stdout
    changes = assert_ledger(
        ecommerce_id=LOST_ECOMMERCE_ID, total=Decimal("26.00"), refunds={12: Decimal("5.00")}
    )
    assert heard() == once_each(changes, ["count"])

    again = athm(env, "reconcile", "--from", "2026-11-20", "--to", "2026-11-21")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[1].startswith("created 0, already present 2,"), again.stdout
    assert heard() == once_each(changes, ["count"])
    assert_notices_delivered(changes, ["count"])
    assert len(fake_athm.requests_to(PATH)) == 2


# --- 5. a receiver's exception with NUL in its text -------------------------------------------------------


def test_a_receiver_raising_with_nul_is_recorded_answered_200_and_redispatched_once(
    start_child, child_env, tmp_path
):
    webhook = heard_child(start_child, tmp_path, nul_once="nul.marker")
    webhook.wait_ready()

    # The failure: nul_once raises ValueError("bad\x00byte") on the payment's notice.
    answer = webhook.request(PAYMENT)
    assert answer["status"] == 200 and answer["answer"]["outcome"] == "applied", (answer, webhook.log())
    assert answer["signals"] == {"payment_completed": 1}  # the receivers after it still ran
    payment = Payment.objects.get()
    assert heard() == Counter({("count", "payment_completed", payment.pk, None): 1})
    event = WebhookEvent.objects.get(pk=answer["answer"]["event_id"])
    [failure] = event.receiver_errors
    assert (failure["signal"], failure["receiver"], failure["attempts"]) == (
        "payment_completed",
        RECEIVER("nul_once"),
        1,
    )
    # Stored, NUL replaced: PostgreSQL's jsonb cannot hold \u0000.
    assert "ValueError: bad\ufffdbyte" in failure["error"] and "\x00" not in failure["error"]
    assert notices_at_failure() == {
        ("payment_completed", payment.pk, None): {"count": "delivered", "nul_once": "failed"}
    }

    # Later, an operator: `athm redispatch EVENT_ID`, in a process of its own.
    env = {**child_env, **HEARD_ENV, "HEARD_NUL_ONCE": str(tmp_path / "nul.marker")}
    redispatched = athm(env, "redispatch", str(event.pk))
    assert redispatched.returncode == 0, redispatched.stderr
    assert f"event {event.pk}: sent" in redispatched.stdout, redispatched.stdout
    again = athm(env, "redispatch", str(event.pk))
    assert again.returncode == 0 and "nothing to do" in again.stdout, again

    late = webhook.request(LATE_REFUND)
    assert late["answer"]["outcome"] == "applied" and late["signals"] == {"refund_sent": 1}, late
    changes = assert_ledger(refunds={4: REFUNDS[4]})
    assert heard() == once_each(changes, ["count", "nul_once"])
    assert event.receiver_errors == []
    [completed, _] = assert_notices_delivered(changes, ["count", "nul_once"])
    nul_entry = next(e for e in completed.receivers if e["receiver"] == RECEIVER("nul_once"))
    assert nul_entry["attempts"] == 2
    assert webhook.close() == 0, webhook.log()


@pytest.fixture
def heard_here():
    """The counting receivers connected in this process (for the in-process webhook), for this test only."""
    yield heard_receivers.connect
    heard_receivers.disconnect()


def test_in_this_process_too_a_nul_failure_is_recorded_and_redispatched_once(
    lambda_handler, heard_here, tmp_path
):
    assert heard_here(nul_once=tmp_path / "nul.marker") == ["count", "nul_once"]

    response = lambda_handler.post(PAYMENT)
    assert response.status == 200 and response.json()["outcome"] == "applied", response
    event = WebhookEvent.objects.get(pk=response.json()["event_id"])
    [failure] = event.receiver_errors
    assert failure["receiver"] == RECEIVER("nul_once") and "bad\ufffdbyte" in failure["error"]

    call_command("redispatch", "--failed", stdout=io.StringIO())
    changes = assert_ledger(refunds={})
    assert heard() == once_each(changes, ["count", "nul_once"])
    assert_notices_delivered(changes, ["count", "nul_once"])
