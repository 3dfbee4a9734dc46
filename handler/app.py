"""The webhook function's entry point, ``handler.app.lambda_handler``: API Gateway (HTTP API 2.0 or REST
1.0, named stages and custom-domain base paths included, or a function URL) in, Django's answer out,
through Mangum and the one-thread ASGI adapter (``handler.asgi``). An invocation that is not an HTTP request
(a keep-warm schedule, a console test) is answered with a small document, never an error.

The event is never logged, whatever ``POWERTOOLS_LOGGER_LOG_EVENT`` says: its path holds the webhook secret
and its body the customer's name, phone and email.

Everything that can be done once per container is done at import: Django and the receivers
(``handler.boot``), the URLconf and its views, the webhook secret (in Lambda, no secret or a short one
refuses the cold start), the check named by ``ATHM_VERIFIER``, and with a topic configured the SNS client.
"""

from __future__ import annotations

import handler.boot  # first: Django set up and the receivers imported

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from django.conf import settings
from django.urls import get_resolver

from athm_core.receive import configured_check
from handler import webhook_secrets
from handler.asgi import Adapter, DjangoOnOneThread
from handler.observability import logger, metrics, trace_handler
from handler.publisher import sns_client

# The secret is read now, not on the first webhook; in Lambda a missing or short one refuses the start.
webhook_secrets.check_at_start()
# A check that cannot be imported refuses the start too, instead of failing every webhook.
configured_check()
get_resolver().url_patterns  # noqa: B018 - imports the URLconf and views now, not on the first request
if settings.ATHM_SNS_TOPIC_ARN:
    # boto3's import and the client's set-up belong to the cold start, not to the first webhook.
    sns_client()

application = DjangoOnOneThread()
_adapter = Adapter(application, lifespan="off", api_gateway_base_path=settings.ATHM_API_GATEWAY_BASE_PATH)


# log_event=False, explicitly: Powertools' explicit choice wins over the POWERTOOLS_LOGGER_LOG_EVENT switch.
@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True, log_event=False
)
@trace_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _adapter(event, context)


handler.boot.ready()  # last: the set-up is done, collection back on, SnapStart hooks registered
