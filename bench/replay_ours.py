"""Our side of the benchmark: each delivery is an API Gateway HTTP API event through
``handler.app.lambda_handler``, in one process, as one warm Lambda container receives them.

Run by ``bench/run.py`` in the project's virtual environment; see ``bench/harness.py`` for the options.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from bench import harness

SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def configure(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "handler.settings"
    os.environ.setdefault("ATHM_WEBHOOK_SECRET", SECRET)
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "athm-webhook")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "AthmBench")


def start(cold: bool) -> tuple[Callable[[str], Any], Callable[[Any], int]]:
    from handler.app import lambda_handler
    from handler.local import LocalContext, http_api_event

    path = f"/webhook/{os.environ['ATHM_WEBHOOK_SECRET'].split(',')[0]}"

    def prepare(body: str) -> tuple[dict, LocalContext]:
        # API Gateway builds the event, and Lambda the context, before the function runs: not timed. In a
        # cold start "in Lambda", the request id is that of the INVOKE event the benchmark's stand-in for
        # the Extensions API hands over.
        context = LocalContext()
        context.aws_request_id = os.environ.get("BENCH_REQUEST_ID") or context.aws_request_id
        return http_api_event("POST", path, body=body, source_ip="203.0.113.7"), context

    def send(request: tuple[dict, LocalContext]) -> int:
        return lambda_handler(*request)["statusCode"]

    return prepare, send


def settle() -> None:
    """Wait (up to 10 s) for what follows the answer: the SNS publish of an invocation in Lambda."""
    from django.conf import settings

    from athm_core.models import OutboxMessage

    if not settings.ATHM_SNS_TOPIC_ARN:
        return
    deadline = time.monotonic() + 10
    while OutboxMessage.objects.filter(published_at=None).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.1)  # for the extension to ask for its next event, which ends the invocation, before exit


def count_rows() -> dict[str, Any]:
    from athm_core.models import Payment, Refund

    return harness.count_rows(Payment, Refund, completed=Payment.Status.COMPLETED)


SIDE = harness.Side(
    name="ours",
    configure=configure,
    start=start,
    signals_module="athm_core.signals",
    count_rows=count_rows,
    settle=settle,
)

if __name__ == "__main__":
    harness.main(SIDE)
