"""HTTP in, athm_core call, status code out: ``POST /webhook/<secret>`` and ``GET /health``.

Answers: 200 for an accepted event (new or duplicate, said in the body) and for one that is kept but
rejected (ATH Móvil's findPayment or a recorded payment contradicts it: ``"accepted": false``); 200 means
the change and its notices are committed, whatever became of the receivers afterwards. 400 names what is
wrong with the payload, 404 a wrong secret or path (before anything touches the database), 405, 413 over
``ATHM_MAX_BODY_BYTES``, 415 a body declared as something other than JSON. 503 when the database is
unavailable: nothing was written, or (the commit's answer lost) it is not known whether it was; a redelivery
finishes the job and does nothing twice. 503 too when ATH Móvil cannot verify the event now: it is kept
``pending``, and the relay applies it once ATH answers. 500 for a bug (the delivery is kept
with its traceback).
"""

from __future__ import annotations

import sys
import traceback

from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from athm_core import dispatch
from athm_core.ath.verification import Unavailable
from athm_core.receive import DATABASE_UNAVAILABLE, Delivery, Outcome, receive
from handler import webhook_secrets
from handler.observability import count, logger


# ATH Móvil posts without a CSRF token: with the admin on (ATHM_ADMIN), its CsrfViewMiddleware runs too.
@csrf_exempt
def webhook(request: HttpRequest, secret: str) -> JsonResponse:
    if not webhook_secrets.matches(secret):  # constant time against every accepted secret
        return not_found(request)
    if request.method != "POST":
        return _method_not_allowed("POST")
    if not _declares_json(request):
        # Refused before the body is read: a form or a file upload is not an ATH Móvil event.
        count("WebhookUnsupportedMediaType")
        return _error(
            415, "unsupported_media_type", f"send application/json, not {request.content_type[:100]!r}"
        )
    limit = settings.ATHM_MAX_BODY_BYTES
    size = _declared_length(request)
    if size <= limit:  # a body declared too large is refused without reading it
        size = len(request.body)
    if size > limit:
        count("WebhookTooLarge")
        return _error(413, "payload_too_large", f"the body is {size} bytes; the limit is {limit}")

    try:
        delivery = receive(
            request.body,
            source_ip=request.META.get("REMOTE_ADDR") or None,
            request_id=_request_id(request),
            charset=request.content_params.get("charset", ""),
        )
    except Unavailable as exc:
        return _unverified(exc)
    except DATABASE_UNAVAILABLE as exc:
        return _unavailable(exc)
    if delivery.outcome == Outcome.INVALID:
        return _invalid(delivery)
    if delivery.contradicted:
        return _rejected(delivery)
    if delivery.outcome == Outcome.FAILED:
        return _failed(delivery)
    if delivery.warnings:
        # Descriptive fields cleaned to be stored: the admin lists them under "has warnings".
        count("WebhookWarnings", len(delivery.warnings))
    anomalies = all_anomalies(delivery.record)
    if anomalies:
        # Money that cannot be right, recorded as sent: the admin lists them under "has anomalies".
        count("WebhookAnomalies", len(anomalies))
    if delivery.outcome == Outcome.UNVERIFIED:
        return _unverifiable(delivery)
    if delivery.outcome == Outcome.PENDING:
        return _pending(delivery)

    record = delivery.record
    count(f"Webhook{record.outcome.capitalize()}")
    # The receivers ran after the commit, inside receive(): each that raised is on its notice.
    _count_notices(getattr(record, "dispatch_report", None))
    logger.info(
        "webhook event processed",
        extra={"event_id": record.pk, "event_type": record.event_type, "outcome": record.outcome},
    )
    return JsonResponse(
        {
            # False for an event that names another payment's reference number (kept, not applied).
            "accepted": record.outcome != Outcome.REJECTED,
            "event_id": record.pk,
            "event_type": record.event_type,
            "outcome": record.outcome,
            "duplicate": record.outcome == Outcome.DUPLICATE,
            "warnings": len(record.warnings),
            "anomalies": [anomaly["kind"] for anomaly in all_anomalies(record)],
        }
    )


# With the admin on, its CsrfViewMiddleware runs too: a POST here is the JSON 405, not Django's CSRF page.
@csrf_exempt
def health(request: HttpRequest) -> JsonResponse:
    """200 when the function can reach its database, 503 when it cannot; to GET and to HEAD (which uptime
    checkers send)."""
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed("GET")
    count("HealthCheck")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return _unavailable(exc)
    return JsonResponse({"status": "ok", "database": "ok"})


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    # Counted: a burst of these is someone guessing the listener URL.
    count("NotFound")
    return _error(404, "not_found", "no such endpoint")


def server_error(request: HttpRequest | None) -> JsonResponse:
    """Django's 500 (``handler500``), called while the view's exception is being handled. Django's own
    request log is off (the path holds the webhook secret), so this logs what failed and where: the
    exception's type and the line that raised it, never its text, which may quote customer data."""
    count("InternalError")
    error = sys.exc_info()[1]
    if error is not None:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        logger.error(
            "a view failed",
            extra={
                "error_type": type(error).__name__,
                "at": f"{frame.filename}:{frame.lineno} in {frame.name}",
            },
        )
    return _error(500, "internal_error", "the request could not be handled")


def bad_request(request: HttpRequest | None, exception: Exception | None = None) -> JsonResponse:
    """Django's 400 (``handler400``: what it refuses around a view) and the edge's (``handler.asgi``).
    Django's RequestDataTooBig, its own ceiling on a body read, is the 413 it is."""
    if isinstance(exception, RequestDataTooBig):
        count("WebhookTooLarge")
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return _error(413, "payload_too_large", f"the body is over {limit} bytes")
    if isinstance(exception, DisallowedHost):
        return unreadable("the Host header names no host this function serves")
    return unreadable("the request cannot be read")


def forbidden(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    count("Forbidden")
    return _error(403, "forbidden", "not allowed")


def unreadable(detail: str) -> JsonResponse:
    """400 for a request that cannot be read. ``detail`` names the part, never quotes it: a header or a path
    may hold anything, the webhook secret included."""
    count("BadRequest")
    logger.warning("request refused: it cannot be read", extra={"why": detail})
    return _error(400, "bad_request", detail)


def all_anomalies(record) -> list[dict]:
    """The delivery's anomalies, and those tying its payment's waiting refunds found after its commit."""
    if record is None:
        return []
    return [*record.anomalies, *getattr(record, "linked_anomalies", [])]


def _count_notices(report: dispatch.Report | None) -> None:
    if report is None:
        return
    if report.failed:
        count("ReceiverFailed", report.failed)
    if report.late:
        # Notices that an earlier delivery of the same payment's events left unfinished.
        count("NoticesDeliveredLate", report.late)
    if report.left_pending:
        # Committed and durable, but not delivered now: the relay delivers them.
        count("NoticesLeftPending", report.left_pending)


def _method_not_allowed(allowed: str) -> JsonResponse:
    count("MethodNotAllowed")
    response = _error(405, "method_not_allowed", f"use {allowed}")
    response["Allow"] = allowed
    return response


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _declares_json(request: HttpRequest) -> bool:
    # ATH Móvil posts application/json, at times with a charset. A request with no Content-Type at all
    # is let through: API Gateway's test console and some proxies drop the header, and the body must
    # still parse as a JSON object. Any declared type but JSON (a form, text, a file upload) is refused.
    if not request.META.get("CONTENT_TYPE", "").strip():
        return True
    kind, _, subtype = request.content_type.partition("/")  # lower-cased, parameters split off
    return kind == "application" and (subtype == "json" or (subtype.endswith("+json") and subtype != "+json"))


def _request_id(request: HttpRequest) -> str:
    event = getattr(request, "scope", {}).get("aws.event") or {}
    return str(event.get("requestContext", {}).get("requestId", ""))[:100]


def _invalid(delivery: Delivery) -> JsonResponse:
    count("WebhookInvalid")
    # The field only: the problem's text may quote the value, and a value may be anyone's data.
    logger.warning("webhook payload rejected", extra={"field": delivery.field})
    if delivery.record is None:
        # The answer is 400 either way: a redelivery of the same body would be just as invalid.
        logger.warning("could not record the rejected payload: database unavailable")
        return _error(400, "invalid_payload", delivery.error)
    return _error(400, "invalid_payload", delivery.error, event_id=delivery.record.pk)


def _rejected(delivery: Delivery) -> JsonResponse:
    count("WebhookRejected")
    # The reason names states and amounts, never the customer.
    logger.warning(
        "webhook event contradicted by ATH Móvil",
        extra={"event_type": delivery.event.type, "why": delivery.error},
    )
    # 200 so that nobody retries it; the answer does not say what ATH Móvil reported.
    return JsonResponse(
        {
            "accepted": False,
            "event_id": delivery.record.pk,
            "event_type": delivery.record.event_type,
            "outcome": delivery.outcome,
            "detail": "ATH Móvil does not confirm this event",
        }
    )


def _unverifiable(delivery: Delivery) -> JsonResponse:
    count("WebhookUnverifiable")
    if delivery.event.type.moves_money:
        # A completion held back (the UnverifiedAlarm); a cancel or expiry in ATH's published shape, which
        # names no identifier, can never be confirmed and moved no money.
        count("WebhookUnverifiablePayment")
    logger.warning(
        "webhook event kept unverified", extra={"event_type": delivery.event.type, "why": delivery.error}
    )
    # 200: the delivery is kept and can be reprocessed once it can be confirmed; a retry would add nothing.
    return JsonResponse(
        {
            "accepted": False,
            "event_id": delivery.record.pk,
            "event_type": delivery.record.event_type,
            "outcome": delivery.outcome,
            "detail": "verification is on and ATH Móvil cannot confirm this event; it is kept, not applied",
            "warnings": len(delivery.warnings),
        }
    )


def _pending(delivery: Delivery) -> JsonResponse:
    count("WebhookUnverified")
    logger.error("ATH Móvil could not verify the event: kept pending", extra={"reason": delivery.error})
    # 503: ATH Móvil may deliver it again, which changes nothing twice; the relay verifies the kept one.
    return _error(
        503,
        "verification_pending",
        "ATH Móvil cannot confirm the event now; it is kept and will be applied once ATH Móvil confirms it",
        event_id=delivery.record.pk,
    )


def _unverified(exc: Exception) -> JsonResponse:
    count("WebhookUnverified")
    logger.error("ATH Móvil could not verify the event", extra={"reason": str(exc)})
    return _error(
        503, "verification_unavailable", "ATH Móvil cannot confirm the event now; deliver it again later"
    )


def _unavailable(exc: Exception) -> JsonResponse:
    count("WebhookUnavailable")
    logger.error("database unavailable", extra={"error_type": type(exc).__name__})
    return _error(
        503, "database_unavailable", "the database cannot be reached; deliver the event again later"
    )


def _failed(delivery: Delivery) -> JsonResponse:
    count("WebhookFailed")
    # athm_core.receive logged the failure with its exception type; the traceback is with the delivery in
    # the database, because exception texts may quote customer data.
    if delivery.record is None:
        logger.error("could not record the failed webhook event")
        return _error(500, "internal_error", "the request could not be handled")
    return _error(
        500, "internal_error", "the event was kept and can be reprocessed", event_id=delivery.record.pk
    )


def _error(status: int, code: str, detail: str, **extra: object) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail, **extra}, status=status)
