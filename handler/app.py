"""The webhook function's entry point, ``handler.app.lambda_handler``: API Gateway (HTTP API 2.0 or REST
1.0, named stages and custom-domain base paths included, or a function URL) in, Django's answer out,
through Mangum and the one-thread ASGI adapter (``handler.asgi``). An invocation that is not an HTTP request
(a keep-warm schedule, a console test) is answered with a small document, never an error.

The event is never logged, whatever ``POWERTOOLS_LOGGER_LOG_EVENT`` says: its path holds the webhook secret
and its body the customer's name, phone and email.

Everything that can be done once per container is done at import: Django and the receivers
(``handler.boot``), the URLconf and its views, the webhook secret (in Lambda, no secret or a short one
refuses the cold start), the check named by ``ATHM_VERIFIER``, and with a topic configured the SNS client,
except in an on-demand Lambda container that publishes after its answer (``handler.after_answer``): that
one makes it after the first answer, off the path ATH Móvil waits on.
"""

from __future__ import annotations

import handler.boot  # first: Django set up and the receivers imported

import os
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from django.conf import settings
from django.urls import get_resolver

from athm_core.receive import configured_check
from handler import after_answer, webhook_secrets
from handler.asgi import Adapter, DjangoOnOneThread
from handler.observability import logger, metrics, trace_handler
from handler.publisher import sns_client

# The secret is read now, not on the first webhook; in Lambda a missing or short one refuses the start.
webhook_secrets.check_at_start()
# A check that cannot be imported refuses the start too, instead of failing every webhook.
configured_check()
get_resolver().url_patterns  # noqa: B018 - imports the URLconf and views now, not on the first request

application = DjangoOnOneThread()
_adapter = Adapter(application, lifespan="off", api_gateway_base_path=settings.ATHM_API_GATEWAY_BASE_PATH)


def _write_metrics() -> None:
    """Write the metrics counted after the answer (the publisher's): Powertools wrote the answer's."""
    if metrics.metric_set:
        metrics.flush_metrics()


# In Lambda, SNS messages are published after the answer, on the worker thread (its database connection).
after_answer.register(application.submit_on_worker, then=_write_metrics)
if settings.ATHM_SNS_TOPIC_ARN and not (
    after_answer.active() and os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "on-demand"
):
    # boto3's import and the client's set-up belong to the cold start when the first webhook's publish
    # comes before its answer, or when the set-up is not waited for (provisioned concurrency, SnapStart's
    # snapshot); an on-demand container that publishes after the answer makes them after its first answer.
    sns_client()


# Outermost, so that the work after the answer starts once Powertools has written the answer's metrics.
@after_answer.hands_over
# log_event=False, explicitly: Powertools' explicit choice wins over the POWERTOOLS_LOGGER_LOG_EVENT switch.
@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True, log_event=False
)
@trace_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _adapter(event, context)


handler.boot.ready()  # last: the set-up is done, collection back on, SnapStart hooks registered
