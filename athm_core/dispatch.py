"""Notices to receivers: the signals that announce committed state changes, delivered at least once.

A state change's notices (:class:`~athm_core.models.Notice`, built here by :func:`payment_notice` and
:func:`refund_notice`) are written by the processor in the transaction that makes the change, each with
the receivers connected to its signal at that moment. After the commit, :func:`deliver` calls those
receivers one at a time, each in a transaction of its own that also records what became of it:

- a receiver that returns is ``delivered`` in the same commit as its own writes, and is never called
  again for that notice;
- one that raises (``SystemExit`` included), or whose transaction cannot commit (it swallowed a database
  error, rolled back, broke a constraint checked at commit), is ``failed``: its transaction, its database
  writes with it, is rolled back; its traceback is recorded on the notice in the next transaction (the log
  gets the exception's type only, as the text may quote customer data), and it is called again later: by
  a redelivery of the same event, by the relay (:func:`deliver_due`, with a backoff) or by
  ``athm redispatch``. A delivery that comes late books the notice's next try before calling anyone, so a
  receiver that hangs or kills the process does not have its notice taken first again on every run.

One notice that cannot be delivered never holds up the others; only an unreachable database stops a run.

The notice's row is locked (``SELECT ... FOR UPDATE SKIP LOCKED``) while one of its receivers runs, so
that two processes never call the same receiver for the same notice, and each sees under the lock what the
other did. A receiver's own database writes commit together with its ``delivered`` state: for what it
writes to this database, a receiver hears of each change exactly once. What it does elsewhere (an email,
an API call) happens again only if the process dies between the receiver's return and that commit.

Receivers are called as the signal would call them (``signal``, ``sender``, ``payment``, and ``refund``
for ``refund_sent``), plus ``notice_id``: a UUID naming the notice (the SNS message for the same change has
it as its ``id``), for receivers that must deduplicate. A receiver is named ``module.qualname``
(:func:`connected_receivers`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.transaction import TransactionManagementError
from django.dispatch import Signal
from django.utils import timezone

from athm_core.events import EventType
from athm_core.models import Notice, Payment, Refund
from athm_core.outbox import Backlog
from athm_core.text import storable

log = logging.getLogger(__name__)

State = Notice.ReceiverState
# The columns that delivering a notice reads, and its receivers' field (which decodes them).
_READ = ["notice_id", "signal", "payment", "refund", "receivers", "attempts", "delivered_at"]
_RECEIVERS = Notice._meta.get_field("receivers")
# A receiver in these states is never called again for the notice.
_DONE = {State.DELIVERED, State.FORGOTTEN}

# How long a new notice is left to the delivery that wrote it before the relay takes it over.
GRACE = timedelta(minutes=1)
# A notice whose receiver failed is tried again after 1 min, 2, 4 ... up to 30 minutes, never giving up.
_FIRST_RETRY = timedelta(minutes=1)
_LAST_RETRY = timedelta(minutes=30)
# A receiver's traceback is kept up to this many characters (its start and its end).
_MAX_ERROR = 20_000
# The database cannot be reached: no use trying the next notice.
_UNREACHABLE = (OperationalError, InterfaceError)


@dataclass
class Report:
    """What one call delivered: notices finished, receivers that raised, notices left unfinished."""

    delivered: int = 0
    # Of those, notices written before this call (by another delivery that did not finish them).
    late: int = 0
    failed: int = 0
    left_pending: int = 0
    # One line per receiver called: "sent payment_completed to shop.receivers.mark_paid", or what failed.
    calls: list[str] = field(default_factory=list)


# --- building notices (inside the processor's transaction) ----------------------------------------------


def payment_notice(kind: EventType, payment: Payment) -> Notice:
    """The unsaved notice of a payment's new state: ``sender=Payment``, ``payment``."""
    return _notice(kind, Payment, payment=payment)


def refund_notice(refund: Refund, payment: Payment) -> Notice:
    """The unsaved notice of a refund tied to its payment: ``refund_sent``, ``sender=Refund``."""
    return _notice(EventType.REFUND_SENT, Refund, payment=payment, refund=refund)


def _notice(kind: EventType, sender: type, *, payment: Payment, refund: Refund | None = None) -> Notice:
    if kind.signal is None:
        raise ValueError(f"{kind} events are never announced")
    now = timezone.now()
    receivers = [
        {"receiver": name, "state": State.PENDING} for name, _, _ in connected_receivers(kind.signal, sender)
    ]
    return Notice(
        signal=kind.signal_name,
        payment=payment,
        refund=refund,
        receivers=receivers,
        created_at=now,
        next_attempt_at=now,
        # Nobody listens: nothing to deliver, ever.
        delivered_at=None if receivers else now,
    )


def kind_of(notice: Notice) -> EventType:
    """The event kind whose signal ``notice`` sends. Raises ``ValueError`` for a name that is no signal."""
    kind = EventType.for_signal_name(notice.signal)
    if kind is None:
        raise ValueError(f"{notice.signal!r} is not a signal of athm_core.signals")
    return kind


def arguments(notice: Notice) -> dict[str, Any]:
    """The keyword arguments a receiver of ``notice`` gets, besides ``signal`` and ``sender``."""
    values: dict[str, Any] = {"payment": notice.payment}
    if notice.signal == EventType.REFUND_SENT.signal_name:
        values["refund"] = notice.refund
    values["notice_id"] = notice.notice_id
    return values


# --- delivering ------------------------------------------------------------------------------------------


def deliver(notices: Iterable[Notice], report: Report | None = None) -> Report:
    """Call the receivers of ``notices`` that have not had them, in order, recording each result.

    The rows in memory (``notice.payment``, ``notice.refund``) are what the receivers get. Notices that
    another process is delivering right now are left to it. When the database cannot be reached, the error
    propagates: what was recorded stays, the rest is left for a redelivery or the relay.
    """
    report = report or Report()
    for notice in notices:
        if notice.delivered_at is None:
            _isolated(notice.pk, report, rows=notice)
    return report


def deliver_pending_of(payment: Payment, report: Report | None = None) -> Report:
    """Deliver every unfinished notice of ``payment``, whatever its backoff: what a redelivery does first."""
    report = report or Report()
    for pk in _pending_ids_of(payment.pk):
        _isolated(pk, report, late=True)
    return report


def deliver_ids(ids: Iterable[int], report: Report | None = None) -> Report:
    """Deliver these notices now, whatever their backoff (``athm redispatch``)."""
    report = report or Report()
    for pk in ids:
        _isolated(pk, report, late=True)
    return report


def deliver_due(*, retry_now: bool = False, deadline: float | None = None, batch: int = 500) -> Report:
    """The relay's work: deliver the notices left unfinished for longer than :data:`GRACE` and due for
    another try, oldest first, until none is left or the :func:`time.monotonic` ``deadline`` has passed.
    ``retry_now`` takes every unfinished notice, ignoring the grace period and the backoff. Each notice is
    tried once per call."""
    report = Report()
    now = timezone.now()
    pending = Notice.objects.filter(delivered_at=None)
    if not retry_now:
        pending = pending.filter(created_at__lte=now - GRACE, next_attempt_at__lte=now)
    last = 0
    while ids := list(pending.filter(id__gt=last).order_by("id").values_list("id", flat=True)[:batch]):
        for pk in ids:
            if deadline is not None and time.monotonic() >= deadline:
                return report
            last = pk
            _isolated(pk, report, late=True)
    return report


def _isolated(pk: int, report: Report, *, rows: Notice | None = None, late: bool = False) -> None:
    """:func:`_deliver_one`, where one notice that cannot be delivered does not hold up the others: only an
    unreachable database stops the caller."""
    try:
        _deliver_one(pk, report, rows=rows, late=late)
    except _UNREACHABLE:
        raise
    except Exception as exc:
        log.error("notice %s could not be delivered: %s; it stays pending", pk, type(exc).__name__)
        report.left_pending += 1


def forget(receiver: str) -> int:
    """Give up ``receiver`` (a name as recorded) on every unfinished notice, for a receiver removed or renamed
    on purpose: it is marked ``forgotten`` and never called for them again. Returns how many notices."""
    forgotten = 0
    report = Report()
    for pk in Notice.objects.filter(delivered_at=None).order_by("id").values_list("id", flat=True):
        with transaction.atomic():
            notice = next(iter(Notice.objects.select_for_update().filter(pk=pk).order_by()), None)
            if notice is None or notice.delivered_at is not None:
                continue
            entries = [e for e in notice.receivers if e.get("receiver") == receiver]
            entries = [entry for entry in entries if entry.get("state") not in _DONE]
            if not entries:
                continue
            for entry in entries:
                entry["state"] = State.FORGOTTEN
            forgotten += 1
            if all(entry.get("state") in _DONE for entry in notice.receivers):
                _settle(notice, report, late=False)
            else:
                _save(notice, ["receivers"])
    log.warning("receiver %s given up on %d unfinished notice(s)", receiver, forgotten)
    return forgotten


def backlog() -> Backlog:
    """How many notices are unfinished, and since when the oldest has waited."""
    return Backlog.of(Notice.objects.filter(delivered_at=None))


def _deliver_one(pk: int, report: Report, *, rows: Notice | None = None, late: bool = False) -> None:
    """Call the notice's receivers that have not had it, one per transaction, under the notice's lock.

    ``late``: the notice was left by an earlier delivery (the relay, a redelivery, a redispatch). Its next
    try is then booked before any receiver runs, so that a receiver that kills or hangs the process does
    not have the notice taken again at once, run after run, ahead of the others.
    """
    if late and not _book_next_try(pk):
        return
    tried: set[str] = set()
    while True:
        calling = None
        signal = ""
        try:
            with transaction.atomic():
                notice = _locked(pk)
                if notice is None or notice.delivered_at is not None:
                    return  # delivered, or another process holds it (and finishes it or leaves it pending)
                entry = _next(notice, tried)
                if entry is None:  # every receiver has it, but the notice was not marked: mark it
                    _settle(notice, report, late)
                    return
                tried.add(entry["receiver"])
                if rows is not None:
                    notice.payment, notice.refund = rows.payment, rows.refund
                calling, signal = entry["receiver"], notice.signal
                _call(notice, entry, report)
                rows = notice  # its payment and refund, read once
                finished = _step_done(notice, tried, report, late)
        except _Raised as raised:
            # The receiver's writes went with its transaction; its failure is recorded in one of its own.
            finished = _record_failure(pk, raised, tried, report, late)
        except Exception as exc:
            if calling is None:
                raise  # the database, before any receiver ran
            # The receiver's transaction could not commit: a constraint checked at commit, or the receiver
            # broke the transaction or its connection. Its failure, all the same.
            finished = _record_failure(pk, _Raised(signal, calling, exc), tried, report, late)
        if finished:
            return


class _Raised(Exception):
    """A receiver's exception, carried out of the receiver's transaction so that it rolls back."""

    def __init__(self, signal: str, name: str, error: BaseException) -> None:
        super().__init__(name)
        self.signal, self.name, self.error = signal, name, error


def _book_next_try(pk: int) -> bool:
    """Count a late delivery run and set the notice's next try after it; ``False`` when there is nothing to
    do (delivered, or another process holds the notice)."""
    with transaction.atomic():
        notice = _locked(pk)
        if notice is None or notice.delivered_at is not None:
            return False
        notice.attempts += 1
        notice.next_attempt_at = _next_try(notice.attempts)
        _save(notice, ["attempts", "next_attempt_at"])
    return True


def _next_try(attempts: int) -> datetime:
    delay = min(_LAST_RETRY, _FIRST_RETRY * 2 ** min(max(attempts, 1) - 1, 20))
    return timezone.now() + delay * random.uniform(0.8, 1.2)


def _locked(pk: int) -> Notice | None:
    """The notice, its row locked (``FOR UPDATE SKIP LOCKED``): ``None`` when another transaction holds it.

    By primary key, and the notice alone: its payment row stays free for the events that change it. Asked
    once per receiver of every change, so written as SQL with names from ``_meta`` (the ORM compiles for
    longer than the database answers, as for the processor's look for waiting refunds); only the columns
    that delivering needs are read.
    """
    quote = connection.ops.quote_name
    columns = ", ".join(quote(Notice._meta.get_field(name).column) for name in _READ)
    lock = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM {quote(Notice._meta.db_table)} WHERE {quote(Notice._meta.pk.column)} = %s"
            f"{lock}",
            [pk],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    values = dict(zip(_READ, row, strict=True))
    notice_id = values["notice_id"]
    return Notice(
        pk=pk,
        notice_id=notice_id if isinstance(notice_id, uuid.UUID) else uuid.UUID(str(notice_id)),
        signal=values["signal"],
        payment_id=values["payment"],
        refund_id=values["refund"],
        receivers=_RECEIVERS.from_db_value(values["receivers"], None, connection) or [],
        attempts=values["attempts"],
        # Only ever asked whether it is set: left as the database returned it.
        delivered_at=values["delivered_at"],
    )


def _save(notice: Notice, fields: list[str]) -> None:
    """``notice.save(update_fields=fields)``, as SQL (see :func:`_locked`)."""
    quote = connection.ops.quote_name
    table, key = quote(Notice._meta.db_table), quote(Notice._meta.pk.column)
    columns = [Notice._meta.get_field(name) for name in fields]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in columns)
    values = [field.get_db_prep_save(getattr(notice, field.attname), connection) for field in columns]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {assignments} WHERE {key} = %s", [*values, notice.pk])


def _next(notice: Notice, tried: set[str]) -> dict[str, Any] | None:
    for entry in notice.receivers:
        if entry.get("state") not in _DONE and entry.get("receiver") not in tried:
            return entry
    return None


def _call(notice: Notice, entry: dict[str, Any], report: Report) -> None:
    """Call one receiver; record on ``entry`` that it returned (or is missing). Raises :class:`_Raised`."""
    name = entry["receiver"]
    _attempted(entry)
    kind = EventType.for_signal_name(notice.signal)
    receiver = _find(kind, name) if kind else None
    if receiver is None:
        problem = (
            f"no receiver {name} is connected to {notice.signal}"
            if kind
            else f"{notice.signal!r} is not a signal of athm_core.signals"
        )
        _failed(notice, entry, report, problem, problem)
        return
    function, is_async = receiver
    try:
        call = async_to_sync(function) if is_async else function
        call(signal=kind.signal, sender=_sender(kind), **arguments(notice))
    except (Exception, SystemExit, asyncio.CancelledError) as exc:
        # SystemExit and a cancelled coroutine too: a receiver must not end the delivery of the others.
        raise _Raised(notice.signal, name, exc) from exc
    if transaction.get_rollback():
        raise _Raised(
            notice.signal, name, TransactionManagementError("the receiver rolled its transaction back")
        )
    entry["state"] = State.DELIVERED
    entry.pop("error", None)
    report.calls.append(f"sent {notice.signal} to {name}")


def _record_failure(pk: int, raised: _Raised, tried: set[str], report: Report, late: bool) -> bool:
    """Record that a receiver raised; returns whether this notice's run is over."""
    with transaction.atomic():
        notice = _locked(pk)
        if notice is None or notice.delivered_at is not None:
            return True
        entry = next((e for e in notice.receivers if e.get("receiver") == raised.name), None)
        # Another process may have called it again, successfully, between the two transactions.
        if entry is not None and entry.get("state") not in _DONE:
            _attempted(entry)
            _failed(
                notice,
                entry,
                report,
                "".join(traceback.format_exception(raised.error)),
                f"{raised.name} raised {type(raised.error).__name__} on {raised.signal}",
            )
        return _step_done(notice, tried, report, late)


def _attempted(entry: dict[str, Any]) -> None:
    entry["attempts"] = int(entry.get("attempts", 0)) + 1
    entry["last_attempt_at"] = timezone.localtime().isoformat()


def _failed(notice: Notice, entry: dict[str, Any], report: Report, error: str, summary: str) -> None:
    entry["state"] = State.FAILED
    entry["error"] = storable(error, limit=_MAX_ERROR)
    # The exception's text may quote customer data: the log gets its type, the database the rest.
    log.error("%s (notice %s); it will be called again", summary, notice.pk)
    report.failed += 1
    report.calls.append(summary)


def _step_done(notice: Notice, tried: set[str], report: Report, late: bool) -> bool:
    """Save the receiver just handled; settle the notice when no receiver is left for this run."""
    if _next(notice, tried) is None:
        _settle(notice, report, late)
        return True
    _save(notice, ["receivers"])
    return False


def _settle(notice: Notice, report: Report, late: bool) -> None:
    """Every receiver has been tried in this run: the notice is delivered, or waits for its next try (booked
    already for a late run)."""
    if all(entry.get("state") in _DONE for entry in notice.receivers):
        notice.delivered_at = timezone.now()
        report.delivered += 1
        report.late += late
        _save(notice, ["receivers", "delivered_at"])
        return
    report.left_pending += 1
    if late:
        _save(notice, ["receivers"])
        return
    notice.attempts += 1
    notice.next_attempt_at = _next_try(notice.attempts)
    _save(notice, ["receivers", "attempts", "next_attempt_at"])


def _pending_ids_of(payment_id: int) -> list[int]:
    """The unfinished notices of a payment. Asked on every redelivery, almost always to hear "none":
    written as SQL, like the processor's look for waiting refunds (the ORM compiles for longer than the
    database answers)."""
    quote = connection.ops.quote_name
    table, key = quote(Notice._meta.db_table), quote(Notice._meta.pk.column)
    payment = quote(Notice._meta.get_field("payment").column)
    delivered = quote(Notice._meta.get_field("delivered_at").column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {key} FROM {table} WHERE {payment} = %s AND {delivered} IS NULL ORDER BY {key}",
            [payment_id],
        )
        return [row[0] for row in cursor.fetchall()]


def _sender(kind: EventType) -> type:
    return Refund if kind == EventType.REFUND_SENT else Payment


# --- receivers by name -------------------------------------------------------------------------------------


def receiver_name(receiver: Any) -> str:
    """How a receiver is named on a notice: ``module.qualname``, the same in every process.

    A ``functools.partial`` is named after the function it wraps (``module.qualname(partial)``: its
    arguments stay out, as they may hold credentials); a callable object after its class; never after
    anything that holds a memory address.
    """
    if isinstance(receiver, functools.partial):
        return f"{receiver_name(receiver.func)}(partial)"
    if not hasattr(receiver, "__qualname__"):
        receiver = type(receiver)
    return f"{getattr(receiver, '__module__', '?')}.{receiver.__qualname__}"


def connected_receivers(signal: Signal, sender: type) -> list[tuple[str, Callable[..., Any], bool]]:
    """``(name, receiver, is_async)`` for each receiver ``signal.send(sender)`` would call, in its order.

    Two receivers with the same name (two lambdas of one function, say) are told apart by ``#2``, ``#3``...
    in the order they were connected.
    """
    named = []
    seen: dict[str, int] = {}
    for receiver, is_async in live_receivers(signal, sender):
        name = receiver_name(receiver)
        seen[name] = seen.get(name, 0) + 1
        named.append((name if seen[name] == 1 else f"{name}#{seen[name]}", receiver, is_async))
    return named


def _find(kind: EventType, name: str) -> tuple[Callable[..., Any], bool] | None:
    for candidate, receiver, is_async in connected_receivers(kind.signal, _sender(kind)):
        if candidate == name:
            return receiver, is_async
    return None


def live_receivers(signal: Signal, sender: type) -> list[tuple[Callable[..., Any], bool]]:
    """The receivers ``signal.send(sender)`` would call, each with whether it is a coroutine function.

    Django has no public way to call one receiver of a signal. This is the project's one use of its private
    API: ``Signal._live_receivers(sender)``, which ``send()`` itself uses, returning ``(sync receivers,
    async receivers)`` with weak references resolved and dead ones dropped. Read in Django 5.0, 5.1 and
    5.2's source (the tuple came with 5.0; 4.2 returned one list), and pinned by
    ``tests/test_dispatch.py``.
    """
    sync_receivers, async_receivers = signal._live_receivers(sender)
    return [(receiver, False) for receiver in sync_receivers] + [
        (receiver, True) for receiver in async_receivers
    ]
