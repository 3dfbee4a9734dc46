"""The Lambda entry point, ``handler.app.lambda_handler``: API Gateway (HTTP API 2.0 or REST 1.0) in,
Django's answer out.

Everything that can be done once per container is done here, at import: Django is set up, the views are
imported, the merchant's receiver modules (``ATHM_RECEIVERS``) are loaded, so a receiver that cannot be
imported fails the cold start with its name instead of failing later, one webhook at a time, and with a
topic configured the SNS client is created.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "handler.settings")

import django

django.setup()

from aws_lambda_powertools.logging import correlation_paths  # noqa: E402
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.urls import get_resolver  # noqa: E402
from mangum import Mangum  # noqa: E402

from handler import webhook_secrets  # noqa: E402
from handler.asgi import DjangoOnOneThread  # noqa: E402
from handler.observability import logger, metrics, trace_handler  # noqa: E402
from handler.publisher import sns_client  # noqa: E402


def load_receivers(modules: Iterable[str]) -> None:
    """Import each receiver module (from anywhere on sys.path, e.g. a layer's /opt/python)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ImproperlyConfigured(
                f"ATHM_RECEIVERS: cannot import receiver module {name!r}: {type(exc).__name__}: {exc}"
            ) from exc


# In Lambda, no secret or a short one refuses the start; the secret is read now, not on the first webhook.
webhook_secrets.check_at_start()
get_resolver().url_patterns  # noqa: B018 - imports the URLconf and views now, not on the first request
load_receivers(settings.ATHM_RECEIVERS)
if settings.ATHM_SNS_TOPIC_ARN:
    # boto3's import and the client's set-up belong to the cold start, not to the first webhook.
    sns_client()
# athm_core's and the receivers' own log records go out like the handler's: JSON, with the correlation id.
receiver_packages = {module.split(".")[0] for module in settings.ATHM_RECEIVERS}
copy_config_to_registered_loggers(source_logger=logger, include={"athm_core", *receiver_packages})

application = DjangoOnOneThread()
_adapter = Mangum(application, lifespan="off")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@trace_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _adapter(event, context)
