"""The Powertools logger, metrics and tracer that the Lambda edge shares.

Logs never carry customer names, phones, emails, raw bodies or the webhook secret: log event ids,
types and outcomes instead.
"""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from django.conf import settings

logger = Logger(service=settings.ATHM_SERVICE_NAME)
metrics = Metrics(namespace=settings.ATHM_METRICS_NAMESPACE, service=settings.ATHM_SERVICE_NAME)
# Nothing is patched: the function's only outbound calls are to its database.
tracer = Tracer(service=settings.ATHM_SERVICE_NAME, auto_patch=False)


def count(metric: str) -> None:
    """Add one to ``metric`` for this invocation."""
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
