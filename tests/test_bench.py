"""The benchmark's corpus and replays: the corpus holds every shape ATH Móvil sends, the same bytes for the
same seed; our replay of it records every state change and every cent it should, on the database under
test, with no new connection and the SQL budget per delivery; and ``bench.run`` runs from end to end
against django-athm in its own virtual environment (once, in the SQLite run of the suite)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from athm_core.payloads import parse
from bench import corpus
from tests.conftest import ROOT, database_url


@pytest.fixture(scope="module")
def replayed() -> corpus.Corpus:
    return corpus.generate(600, seed=11)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_others():
    assert corpus.generate(150, seed=3).deliveries == corpus.generate(150, seed=3).deliveries
    assert corpus.generate(150, seed=3).deliveries != corpus.generate(150, seed=4).deliveries


def test_the_corpus_holds_every_event_and_about_one_redelivery_in_five():
    big = corpus.generate(3000)
    kinds = big.kinds()
    assert set(kinds) == {*corpus.SIGNAL_OF, "redelivery"}
    assert 0.17 < kinds["redelivery"] / len(big.deliveries) < 0.23
    # Every first delivery of an event that changes state is expected to change it exactly once.
    expected = big.expected["state_changes"]
    for kind, signal in corpus.SIGNAL_OF.items():
        if signal:
            assert expected[signal] == kinds[kind], kind
    assert (
        big.expected["state_changes_total"] == len(big.deliveries) - kinds["redelivery"] - kinds["simulated"]
    )


def test_the_corpus_holds_every_payload_shape_seen_in_production():
    bodies = [delivery.body for delivery in corpus.generate(3000).deliveries]
    data = [json.loads(body) for body in bodies]

    def some(predicate) -> bool:
        return any(predicate(item) for item in data)

    assert some(lambda d: d["transactionType"] == "ECOMMERCE") and some(
        lambda d: d["transactionType"] == "ecommerce"
    )
    assert some(lambda d: d["status"] == "CANCEL") and some(lambda d: d["status"] == "cancelled")
    assert some(lambda d: d["status"] == "expired") and some(lambda d: d["transactionType"] == "REFUND")
    assert some(lambda d: isinstance(d.get("dailyTransactionId"), int))
    assert some(
        lambda d: isinstance(d.get("dailyTransactionID"), str) and d["dailyTransactionID"].startswith("0")
    )
    assert some(lambda d: "subTotal" in d) and some(lambda d: "subtotal" in d)
    assert some(lambda d: isinstance(d["total"], str)) and some(lambda d: isinstance(d["total"], int))
    assert any(re.search(r'"fee": \d+\.\d{12,}', body) for body in bodies), "single-precision float noise"
    assert some(lambda d: isinstance(d.get("phoneNumber"), int))
    assert some(lambda d: str(d.get("phoneNumber", "")).startswith("(787) "))
    assert some(lambda d: "T" in d["date"]) and some(lambda d: d["date"].endswith(".0"))
    assert some(lambda d: re.search(r"\.\d{6}$", d["date"]))
    assert some(lambda d: d.get("ecommerceId", "").endswith(" "))
    assert some(lambda d: len(d.get("ecommerceId", "")) == 32)
    assert some(lambda d: d.get("name", "").startswith(" "))
    assert some(lambda d: "channel" in d), "an unknown field"
    assert some(lambda d: d.get("items") and "formattedPrice" in d["items"][0])
    assert some(lambda d: d.get("items") and isinstance(d["items"][0]["quantity"], str))


def test_some_refunds_come_before_their_payment_and_some_payments_are_refunded_twice():
    seen_payments: set[str] = set()
    early = 0
    refunds_per_reference: Counter = Counter()
    for delivery in corpus.generate(3000).deliveries:
        data = json.loads(delivery.body)
        if delivery.kind in ("ecommerce_completed", "payment_received"):
            seen_payments.add(data["referenceNumber"])
        elif delivery.kind == "refund_sent":
            refunds_per_reference[data["referenceNumber"]] += 1
            early += data["referenceNumber"] not in seen_payments
    assert early > 0
    assert max(refunds_per_reference.values()) == 2


def test_every_delivery_of_the_corpus_is_read_without_error(replayed):
    for delivery in replayed.deliveries:
        parse(delivery.body.encode())


def _bench_database_url(tmp_path: Path) -> str:
    """A database of its own for a replay process, beside the test database, on the same server."""
    if connection.vendor == "sqlite":
        return database_url(str(tmp_path / "bench.sqlite3"))
    return database_url(f"bench_test_{os.getpid()}")


def _run(module: str, *arguments: str) -> None:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("ATHM_", "DJANGO_", "AWS_"))
    }
    env.pop("DATABASE_URL", None)
    finished = subprocess.run(
        [sys.executable, "-m", module, *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]


def _drop(url: str) -> None:
    if url.startswith("sqlite"):
        return
    name = url.rsplit("/", 1)[1]
    with connection._nodb_cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {connection.ops.quote_name(name)}")


@pytest.mark.django_db
def test_our_replay_records_every_state_change_and_every_cent_with_one_connection(replayed, tmp_path):
    corpus_path = tmp_path / "corpus.jsonl"
    replayed.write(corpus_path)
    url = _bench_database_url(tmp_path)
    out = tmp_path / "ours.json"
    try:
        _run("bench.replay_ours", "--corpus", str(corpus_path), "--database-url", url, "--out", str(out))
    finally:
        _drop(url)
    report = json.loads(out.read_text())
    expected = replayed.expected
    assert report["statuses"] == {"200": len(replayed.deliveries)}
    assert report["signals"] == expected["state_changes"]
    assert report["rows"]["payments_cents"] == expected["payments_cents"]
    assert report["rows"]["refunds_cents"] == expected["refunds_cents"]
    assert (
        report["rows"]["refunds"]
        == report["rows"]["refunds_linked"]
        == expected["state_changes"]["refund_sent"]
    )
    assert report["new_connections_warm"] == 0
    # The SQL budget (no topic here, so no outbox row): a new completion takes 4 statements in its
    # transaction (lock, payment, webhook event, notice), then the look for refunds waiting for the payment
    # and its one receiver's transaction (lock the notice, record it delivered). A redelivery takes 2 in
    # its transaction, then at most the looks for waiting refunds and unfinished notices.
    kinds = report["by_kind"]
    assert kinds["ecommerce_completed"]["sql_in_transaction"] == 4
    assert kinds["ecommerce_completed"]["sql"] == 7
    assert kinds["redelivery"]["sql_in_transaction"] == 2
    assert kinds["redelivery"]["sql"] <= 4
    assert report["p50_ms"] > 0 and report["deliveries_per_second"] > 0


@pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="runs once per suite, in its SQLite run; it covers SQLite only",
)
def test_the_benchmark_runs_from_end_to_end_against_django_athm(tmp_path):
    from bench import run

    try:
        run.ensure_peer_venv()
    except subprocess.CalledProcessError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"django-athm could not be installed from PyPI here ({exc}); CI=1 makes this an error")
    results_path = tmp_path / "results.json"
    _run(
        "bench.run",
        *("--flows", "120", "--repeat", "1", "--cold-runs", "1", "--databases", "sqlite", "--no-memory"),
        *("--json", str(results_path)),
    )
    results = json.loads(results_path.read_text())
    expected = results["corpus"]["expected"]
    ours, theirs = results["replay"]["sqlite"]["ours"], results["replay"]["sqlite"]["theirs"]
    assert ours["state_changes"] == expected["state_changes_total"]
    assert ours["rows"]["payments_cents"] == expected["payments_cents"]
    assert 0 < theirs["state_changes"] <= expected["state_changes_total"]
    assert theirs["statuses"] == {"200": results["corpus"]["deliveries"]}
    for side in ("ours", "theirs"):
        assert results["cold_start"][side]["to_first_answer_ms"] > 0
    assert results["versions"]["django-athm"].startswith("1.0.")
    assert results["artifact"]["theirs_bytes"] > 0
    # The built packages' cold starts are measured where both packages and the Python 3.13 root are here;
    # elsewhere the results say what is missing.
    built = results.get("built_packages")
    if built:
        assert built["python3.13"]["to_first_answer_ms"] > 0 and built["python3.11"]["to_first_answer_ms"] > 0
    else:
        assert results["skipped"]["cold start of the built packages"]


def test_the_built_packages_cold_start_says_what_is_missing(tmp_path, monkeypatch):
    from bench import packages

    assert "has no usr/bin/python3.13" in packages.missing(str(tmp_path))
    monkeypatch.delenv("PYTHON313_ROOT", raising=False)
    skipped: dict[str, str] = {}
    assert packages.cold_starts(1, tmp_path, skipped) is None
    why = skipped[packages.SECTION]
    assert "PYTHON313_ROOT is not set" in why
    assert packages.report({"skipped": skipped}) == [
        f"\n## Cold start of the built packages\n\nNot measured: {why}."
    ]
    assert list(tmp_path.iterdir()) == []  # nothing was started


@pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="runs once per suite, in its SQLite run; the packages run on SQLite",
)
def test_the_built_packages_cold_starts_are_measured_side_by_side(tmp_path):
    from bench import packages

    why = packages.missing(os.environ.get("PYTHON313_ROOT", ""))
    if why:
        pytest.skip(why)
    skipped: dict[str, str] = {}
    built = packages.cold_starts(1, tmp_path, skipped)
    assert skipped == {}
    for runtime, version in (("python3.11", "3.11."), ("python3.13", "3.13.")):
        figures = built[runtime]
        assert figures["python"].startswith(version)
        assert 0 < figures["init_ms"] < figures["to_first_answer_ms"]
        assert figures["compiled_package_modules"] == 0  # from the .pyc files, as in Lambda
    assert built["ratio_313_to_311"] == pytest.approx(
        built["python3.13"]["to_first_answer_ms"] / built["python3.11"]["to_first_answer_ms"]
    )
    results = {"built_packages": built, "skipped": {}, "cold_start": {"theirs": {"to_first_answer_ms": 1.0}}}
    text = "\n".join(packages.report(results))
    assert f"python3.13/python3.11: {built['ratio_313_to_311']:.2f}" in text
    assert "not the interpreters on equal footing" in text
