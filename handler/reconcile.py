"""The scheduled reconciliation's Lambda entry point, ``handler.reconcile.lambda_handler`` (EventBridge).

It runs :func:`athm_core.ath.reconciliation.reconcile` (what ``athm reconcile`` runs from a shell) and
turns the report into logs and metrics: ``ReconcileCreated``, ``ReconcilePresent``,
``ReconcileMismatches``, ``ReconcileUnreadable``, and ``ReconcileFailed`` when ATH Móvil's report cannot be
read. Logs carry ids and amounts only, never customer data or the private token.
"""

from __future__ import annotations

import handler.boot  # first: Django set up and the receivers imported

from datetime import date
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from athm_core.ath.client import AthmApiError
from athm_core.ath.reconciliation import DEFAULT_DAYS, days_ending_today, reconcile
from handler.observability import count, logger, metrics


@logger.inject_lambda_context(clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Reconcile the last ``event["days"]`` days (default 2), or ``event["from"]`` to ``event["to"]``.

    A report that cannot be read fails the invocation (so the schedule's errors alarm), having written
    nothing.
    """
    event = event if isinstance(event, dict) else {}
    if event.get("from"):
        from_day = date.fromisoformat(event["from"])
        to_day = date.fromisoformat(event.get("to") or event["from"])
    else:
        from_day, to_day = days_ending_today(int(event.get("days") or DEFAULT_DAYS))
    try:
        report = reconcile(from_day, to_day, dry_run=bool(event.get("dry_run")))
    except AthmApiError as exc:
        count("ReconcileFailed")
        logger.error(
            "reconciliation failed: the transaction report could not be read", extra={"error": str(exc)}
        )
        raise
    summary = report.as_dict()
    for metric, key in (
        ("ReconcileCreated", "created"),
        ("ReconcilePresent", "present"),
        ("ReconcileMismatches", "mismatches"),
        ("ReconcileUnreadable", "unreadable"),
    ):
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=summary[key])
    for line in report.lines()[2:]:
        if line.startswith(("created", "would create")):
            logger.info(line)
        else:
            logger.warning(line)
    logger.info("reconciled", extra={"reconciliation": summary})
    return summary


handler.boot.ready()  # last: the set-up is done, collection back on, SnapStart hooks registered
