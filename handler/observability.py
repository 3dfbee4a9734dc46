"""The Powertools logger, metrics and tracer that the Lambda edge shares.

Logs never carry customer names, phones, emails, raw bodies or the webhook secret: log event ids,
types and outcomes instead.
"""

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
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
