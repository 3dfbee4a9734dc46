"""What both replays share: a fresh database, the clock, the SQL counter, the signal tally, the report.

A replay is one process: ``python -m bench.replay_ours`` in the project's virtual environment, or
``python -m bench.replay_theirs`` in django-athm's. Each calls :func:`main` with a ``Side``, which says
how to set Django up, how to post one delivery, and which signals announce state changes. The report is
JSON, written to ``--out``; stdout belongs to the side (our handler logs there, as it does in Lambda) and
goes to /dev/null.

Only the standard library and Django are used here: the peer's environment has nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import corpus


@dataclass
class Side:
    name: str
    # Configure Django for the database URL (environment, settings module); nothing is imported yet.
    configure: Callable[[str], None]
    # Called once Django is set up and the database exists (``cold`` for a cold start). Returns
    # ``prepare(body) -> request``, the work done before the receiver runs (not timed), and
    # ``send(request) -> HTTP status`` (timed).
    start: Callable[[bool], tuple[Callable[[str], Any], Callable[[Any], int]]]
    # The module whose signals announce state changes; each is tallied by its name.
    signals_module: str
    # Rows recorded after the replay: {"payments_cents": ..., "refunds_cents": ..., ...}.
    count_rows: Callable[[], dict[str, Any]]
    # After a cold start's answer, waits for the work the side does after it, if any (not timed).
    settle: Callable[[], None] = lambda: None


class SqlCounter:
    """An execute wrapper on every connection: statements sent, and how many inside the delivery's first
    transaction (the one that records the change; the notices' deliveries after it have their own).

    BEGIN is not counted (Django sends it as a statement on SQLite only; elsewhere the driver does), nor
    COMMIT (never a statement here): what is counted is the same on every database.
    """

    def __init__(self) -> None:
        self.total = 0
        self.in_transaction = 0
        self._first_transaction = None

    def __call__(self, execute, sql, params, many, context):
        if sql.startswith("BEGIN"):
            return execute(sql, params, many, context)
        self.total += 1
        connection = context["connection"]
        if connection.in_atomic_block:
            outermost = connection.atomic_blocks[0]
            if self._first_transaction is None:
                self._first_transaction = outermost
            if outermost is self._first_transaction:
                self.in_transaction += 1
        return execute(sql, params, many, context)

    def take(self) -> tuple[int, int]:
        counts = (self.total, self.in_transaction)
        self.total = self.in_transaction = 0
        self._first_transaction = None
        return counts


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)
    signals: Counter = field(default_factory=Counter)
    new_connections: int = 0
    times_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    sql: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))


def rss_mib() -> tuple[float, float]:
    """The process's resident memory now and at its peak (VmHWM), in MiB: what Lambda reports as used."""
    now = peak = 0.0
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return now, peak or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(side: Side) -> None:
    parser = argparse.ArgumentParser(description=f"Replay a corpus through {side.name}.")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--out", type=Path, required=True)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--corpus", type=Path, help="replay this corpus (JSON lines) on a fresh database")
    mode.add_argument("--memory", type=Path, help="replay this corpus, measuring memory only")
    mode.add_argument("--prepare", action="store_true", help="create and migrate the database, and stop")
    mode.add_argument("--drop", action="store_true", help="drop the database (PostgreSQL, MariaDB), and stop")
    mode.add_argument("--cold", metavar="BODY", help="answer one delivery in this new process, and stop")
    args = parser.parse_args()
    # The side's own output (our JSON logs and metrics, as in Lambda) is written, then thrown away.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    side.configure(args.database_url)
    if args.cold is not None:
        report = _cold(side, args.cold)
    elif args.prepare:
        report = _prepare(side, args.database_url)
    elif args.drop:
        report = _drop()
    elif args.memory:
        report = _memory(side, args.database_url, args.memory)
    else:
        report = _replay(side, args.database_url, args.corpus)
    args.out.write_text(json.dumps(report, indent=1))


def _cold(side: Side, body: str) -> dict[str, Any]:
    # The parent noted CLOCK_MONOTONIC before starting this process; the difference is the cold start.
    import django

    django.setup()
    prepare, send = side.start(True)
    set_up = time.monotonic()
    status = send(prepare(body))
    answered = time.monotonic()
    side.settle()
    return {"status": status, "set_up": set_up, "answered": answered}


def _prepare(side: Side, url: str) -> dict[str, Any]:
    import django

    django.setup()
    _fresh_database(url)
    return {"prepared": True}


def _drop() -> dict[str, Any]:
    import django
    from django.db import connection

    django.setup()
    name = connection.settings_dict["NAME"]
    with connection._nodb_cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {connection.ops.quote_name(name)}")
    return {"dropped": name}


def _fresh_database(url: str) -> None:
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor == "sqlite":
        path = Path(connection.settings_dict["NAME"])
        path.unlink(missing_ok=True)
    else:
        # Drop and create the database named in the URL, through the server's maintenance database.
        name = connection.settings_dict["NAME"]
        with connection._nodb_cursor() as cursor:
            quote = connection.ops.quote_name
            cursor.execute(f"DROP DATABASE IF EXISTS {quote(name)}")
            charset = " CHARACTER SET utf8mb4" if connection.vendor == "mysql" else ""
            cursor.execute(f"CREATE DATABASE {quote(name)}{charset}")
    call_command("migrate", verbosity=0, interactive=False)
    connection.close()


def _watch(side: Side, tally: Tally, counter: SqlCounter | None) -> None:
    import importlib

    from django.db.backends.signals import connection_created
    from django.dispatch import Signal

    def on_connection(sender, connection, **kwargs):
        tally.new_connections += 1
        if counter is not None and counter not in connection.execute_wrappers:
            connection.execute_wrappers.append(counter)

    connection_created.connect(on_connection, weak=False)
    module = importlib.import_module(side.signals_module)
    for name, value in vars(module).items():
        if isinstance(value, Signal):
            value.connect(_tallier(tally, name), weak=False)


def _tallier(tally: Tally, name: str):
    def receiver(sender, **kwargs):
        tally.signals[name] += 1

    return receiver


def _replay(side: Side, url: str, corpus_path: Path) -> dict[str, Any]:
    import django

    django.setup()
    _fresh_database(url)
    tally = Tally()
    counter = SqlCounter()
    _watch(side, tally, counter)
    prepare, send = side.start(False)
    deliveries = [(kind, prepare(body)) for kind, body in corpus.read(corpus_path)]
    # The first delivery opens the connection and warms Django's caches: it is not a warm invocation.
    tally.statuses[send(deliveries[0][1])] += 1
    counter.take()
    connections_before_warm = tally.new_connections
    clock = time.perf_counter_ns
    started = clock()
    applied = []
    for kind, request in deliveries[1:]:
        changes = tally.signals.total()
        before = clock()
        status = send(request)
        elapsed = clock() - before
        tally.statuses[status] += 1
        tally.times_ms[kind].append(elapsed / 1e6)
        tally.sql[kind].append(counter.take())
        if tally.signals.total() > changes:
            applied.append(elapsed / 1e6)
    wall = (clock() - started) / 1e9
    warm = len(deliveries) - 1
    every = sorted(ms for times in tally.times_ms.values() for ms in times)
    return {
        "side": side.name,
        "deliveries": len(deliveries),
        "warm_deliveries": warm,
        "deliveries_per_second": warm / wall,
        "p50_ms": _percentile(every, 50),
        "p99_ms": _percentile(every, 99),
        # Like for like: only the deliveries that this side recorded as a state change (a signal fired).
        "applied_p50_ms": _percentile(sorted(applied), 50),
        "by_kind": {
            kind: {
                "count": len(times),
                "p50_ms": _percentile(sorted(times), 50),
                "sql": statistics.median(total for total, _ in tally.sql[kind]),
                "sql_in_transaction": statistics.median(inside for _, inside in tally.sql[kind]),
                "sql_max": max(total for total, _ in tally.sql[kind]),
            }
            for kind, times in sorted(tally.times_ms.items())
        },
        "new_connections_warm": tally.new_connections - connections_before_warm,
        "new_connections_per_warm_invocation": (tally.new_connections - connections_before_warm) / warm,
        "statuses": {str(status): count for status, count in sorted(tally.statuses.items())},
        "signals": dict(sorted(tally.signals.items())),
        "rows": side.count_rows(),
    }


def _memory(side: Side, url: str, corpus_path: Path) -> dict[str, Any]:
    import gc

    import django

    django.setup()
    _fresh_database(url)
    tally = Tally()
    _watch(side, tally, None)
    prepare, send = side.start(False)
    gc.collect()
    set_up_rss, _ = rss_mib()
    samples = []
    count = 0
    # Streamed from the file, so the corpus itself never sits in memory.
    for _, body in corpus.read(corpus_path):
        tally.statuses[send(prepare(body))] += 1
        count += 1
        if count % 1000 == 0:
            samples.append(round(rss_mib()[0], 1))
    rss, peak = rss_mib()
    return {
        "side": side.name,
        "deliveries": count,
        "rss_after_set_up_mib": set_up_rss,
        "rss_every_1000_mib": samples,
        "rss_end_mib": rss,
        "peak_rss_mib": peak,
        "statuses": {str(status): n for status, n in sorted(tally.statuses.items())},
    }


def _percentile(ordered: list[float], percent: float) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def count_rows(payment_model: Any, refund_model: Any, *, completed: str) -> dict[str, Any]:
    """What a side recorded, from its own Payment and Refund models (both have these fields)."""
    from django.db.models import Count, Sum

    payments, refunds = payment_model.objects, refund_model.objects
    total = payments.filter(status=completed).aggregate(total=Sum("total"))["total"]
    return {
        "payments": payments.count(),
        "payments_by_status": dict(payments.values_list("status").annotate(n=Count("pk")).order_by()),
        "payments_cents": _cents(total),
        "refunds": refunds.count(),
        "refunds_linked": refunds.exclude(payment=None).count(),
        "refunds_cents": _cents(refunds.aggregate(total=Sum("amount"))["total"]),
    }


def _cents(value: Any) -> int:
    return round(value * 100) if value is not None else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run bench.replay_ours or bench.replay_theirs")
