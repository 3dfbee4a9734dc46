"""The Powertools logger, metrics and tracer that the Lambda edge shares.

Logs never carry customer names, phones, emails, raw bodies or the webhook secret: log event ids,
types and outcomes instead.

In Lambda the logs are JSON, one document a record, and the metrics CloudWatch's embedded metric format.
The ``athm`` commands that run the functions on a terminal (serve, invoke, relay) call
:func:`console_logs` first: one readable line a record, of the same records, and no metrics unless asked.
"""

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from django.conf import settings

logger = Logger(service=settings.ATHM_SERVICE_NAME)
metrics = Metrics(namespace=settings.ATHM_METRICS_NAMESPACE, service=settings.ATHM_SERVICE_NAME)

if settings.ATHM_TRACING:
    from aws_lambda_powertools import Tracer

    # Nothing is patched: the outbound calls (the database, SNS, Secrets Manager, ATH Móvil's API) count as
    # the handler's own time rather than subsegments, and patching their libraries would lengthen every
    # cold start.
    tracer: Any = Tracer(service=settings.ATHM_SERVICE_NAME, auto_patch=False)
else:
    # The X-Ray SDK costs about 0.3 s of imports (botocore among them); where Powertools would
    # disable tracing anyway (outside Lambda, or POWERTOOLS_TRACE_DISABLED), it is not loaded at all.
    tracer = None


def trace_handler(handler: Callable) -> Callable:
    """Trace the Lambda handler with X-Ray when tracing is on; responses stay out of the trace."""
    return tracer.capture_lambda_handler(handler, capture_response=False) if tracer else handler


def count(metric: str, value: int = 1) -> None:
    """Add ``value`` (one) to ``metric`` for this invocation."""
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=value)


class ConsoleFormatter(LambdaPowertoolsFormatter):
    """A record as one line for a terminal: ``12:55:03 INFO  webhook event processed  event_id=1
    event_type=ecommerce.completed outcome=applied``. The record's own keys follow as key=value; what
    Lambda's context adds (function, memory, request and correlation ids, cold start) is left out, and
    nothing is added that the JSON lines do not carry. An exception's traceback follows on its own lines."""

    # The keys of every record that the line shows in its own way, or not at all.
    _NOT_SHOWN = frozenset(
        {
            "level",
            "location",
            "message",
            "timestamp",
            "service",
            "sampling_rate",
            "name",
            "cold_start",
            "function_name",
            "function_memory_size",
            "function_arn",
            "function_request_id",
            "correlation_id",
            "xray_trace_id",
            "exception",
            "exception_name",
            "exception_notes",
            "stack_trace",
        }
    )

    def __init__(self) -> None:
        super().__init__(datefmt="%H:%M:%S", serialize_stacktrace=False, name="%(name)s")

    def serialize(self, log: dict[str, Any]) -> str:
        message = log.get("message", "")
        if not isinstance(message, str):
            message = _console_value(message)
        if log.get("name") not in (None, logger.name):
            message = f"{log['name']}: {message}"  # a module's own logger (athm_core's, a receiver's)
        line = f"{log.get('timestamp', '')} {log.get('level', ''):<5} {message}"
        keys = " ".join(
            f"{key}={_console_value(value)}" for key, value in log.items() if key not in self._NOT_SHOWN
        )
        if keys:
            line += "  " + keys
        if log.get("exception"):
            line += "\n" + str(log["exception"])
        return line


def _console_value(value: Any) -> str:
    if isinstance(value, str):
        plain = value and not any(c.isspace() or c in "\"='" for c in value)
        return value if plain else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


@contextlib.contextmanager
def console_logs() -> Iterator[None]:
    """Logs for a terminal, while it lasts: one readable line a record (:class:`ConsoleFormatter`, for every
    logger that shares the handler's: athm_core's and the receivers', ``handler.boot``), and no metric
    documents, unless ``POWERTOOLS_METRICS_DISABLED`` is set (false: they are printed, as in Lambda).
    Everything is as it was after it, for a command called in a process that goes on. The Lambda functions
    never use it."""
    handler = logger.registered_handler
    formatter = handler.formatter
    metrics_disabled = os.environ.get("POWERTOOLS_METRICS_DISABLED")
    provider = metrics.provider
    add_cold_start_metric = provider.add_cold_start_metric

    def cold_start_metric_unless_disabled(context: Any) -> None:
        # Powertools prints the cold start's metric whether metrics are disabled or not.
        if not is_metrics_disabled():
            add_cold_start_metric(context)

    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    handler.setFormatter(ConsoleFormatter())
    provider.add_cold_start_metric = cold_start_metric_unless_disabled
    try:
        yield
    finally:
        del provider.add_cold_start_metric  # the method again
        handler.setFormatter(formatter)
        if metrics_disabled is None:
            os.environ.pop("POWERTOOLS_METRICS_DISABLED", None)
