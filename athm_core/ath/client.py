"""A small client for ATH Móvil's business API, on the standard library alone: athm_core's only outbound
calls.

It registers the webhook listener (:func:`register_webhook`), looks up an eCommerce payment
(:func:`find_payment`, for verifying events), reads the transaction report (:func:`transaction_report`,
for reconciliation) and refunds a payment (:func:`refund`, for :mod:`athm_core.refunds`). Every call goes
through :func:`_request`, which owns what all of ATH Móvil's endpoints share: JSON in and out, a bounded wait,
and one exception type, :class:`AthmApiError`, for every way a call can fail (an HTTP error, an
``{"status": "error", ...}`` answer, a body that is not JSON, a server that cannot be reached or does not
answer in time). The eCommerce calls (findPayment, refund) live on another host than the rest:
``ATHM_PAYMENTS_API_BASE_URL`` beside ``ATHM_API_BASE_URL``.

The private token is a credential: nothing here logs, and no exception message carries it, even when
ATH Móvil's own error message quotes it back; the functions that hold it or ATH's raw answers mark their
variables sensitive, so that Django's error reports (the mail to ``ADMINS``) leave them out.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.views.decorators.debug import sensitive_variables

from athm_core.conf import athm_settings
from athm_core.events import EventType
from athm_core.payloads import PUERTO_RICO

# Seconds that connecting, and each read of the answer, may wait. Module level so tests can shorten it.
TIMEOUT = 10.0

WEBHOOK_PATH = "/transactions/webhook/post"
FIND_PAYMENT_PATH = "/api/business-transaction/ecommerce/business/findPayment"
REPORT_PATH = "/transactions/v4/transactionReport"
REFUND_PATH = "/api/business-transaction/ecommerce/refund"
# Seconds a refund may take to answer: longer than the other calls, since giving up early leaves a refund
# that may have been made pending until the webhook or the transaction report settles it.
REFUND_TIMEOUT = 30.0
# transactionReport's error codes that are answers rather than failures.
NO_RECORDS = "BTRA_0022"
RANGE_TOO_LARGE = "BTRA_0026"

# The events a listener can subscribe to, by the names `athm register_webhook --events` takes (the event
# types, "_" for "."), each with the boolean field of ATH Móvil's subscription request that it sets.
WEBHOOK_EVENTS = {kind.subscription_name: kind.subscription_flag for kind in EventType.subscribable()}

# Plain HTTP only to this machine (the tests' fake ATH Móvil): anywhere else it would expose the tokens.
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# An error answer is quoted in the exception; a whole HTML error page would drown the message.
_QUOTE_LIMIT = 300

# Strings to blank out of any text quoted from an answer (the private token).
Secrets = tuple[str, ...]


class AthmApiError(Exception):
    """A call to ATH Móvil's API failed.

    ``status`` is the HTTP status (``None`` when no answer came), ``code`` ATH Móvil's error code (such as
    ``BTRA_0017``) when it sent one, ``message`` what went wrong, in ATH Móvil's words where it gave any.
    ``refused`` is true when ATH Móvil answered with its own error shape (``{"status": "error", ...}``): it
    received the request and said no. Otherwise (no answer, a timeout, an answer that is not ATH's) it is
    not known what ATH Móvil did.
    """

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, refused: bool = False
    ) -> None:
        self.message = message
        self.status = status
        self.code = code
        self.refused = refused
        super().__init__(str(self))

    def __str__(self) -> str:
        origin = ", ".join(
            part for part in (f"HTTP {self.status}" if self.status else "", self.code or "") if part
        )
        return f"ATH Móvil: {self.message}" + (f" ({origin})" if origin else "")


@sensitive_variables()
def register_webhook(
    listener_url: str, *, events: Iterable[str], public_token: str, private_token: str
) -> Any:
    """Subscribe ``listener_url`` to ``events`` (names from :data:`WEBHOOK_EVENTS`), and to no others.

    Returns ATH Móvil's answer, parsed (its success body is not documented, so it is not interpreted).
    Raises ``ValueError`` for an unknown event name, before anything is sent.
    """
    chosen = set(events)
    unknown = sorted(chosen - WEBHOOK_EVENTS.keys())
    if unknown:
        raise ValueError(f"unknown event {', '.join(unknown)}; valid events: {', '.join(WEBHOOK_EVENTS)}")
    payload = webhook_request(listener_url, chosen, public_token=public_token, private_token=private_token)
    return _request("POST", WEBHOOK_PATH, payload, secrets=(private_token,))


def find_payment(ecommerce_id: str, *, public_token: str, timeout: float | None = None) -> Any:
    """ATH Móvil's record of the eCommerce payment ``ecommerce_id``: ``{"status": "success", "data": {...}}``
    with ``ecommerceStatus``, ``referenceNumber``, ``total`` and more in ``data``."""
    payload = {"ecommerceId": ecommerce_id, "publicToken": public_token}
    return _request(
        "POST", FIND_PAYMENT_PATH, payload, base_url=athm_settings.ATHM_PAYMENTS_API_BASE_URL, timeout=timeout
    )


@sensitive_variables()
def transaction_report(
    from_date: datetime, to_date: datetime, *, public_token: str, private_token: str
) -> list[Any]:
    """The transactions between ``from_date`` and ``to_date`` (both included), in the webhook shape.

    The dates go as Puerto Rico wall time (``"YYYY-MM-DD HH:MM:SS"``), which is what ATH Móvil means.
    ``BTRA_0022`` (no records) is an empty list; ``BTRA_0026`` (range too large) and every other failure
    raise :class:`AthmApiError`, whose ``code`` tells them apart. The rows are returned as ATH sent them.
    """
    payload = {
        "publicToken": public_token,
        "privateToken": private_token,
        "fromDate": _report_date(from_date),
        "toDate": _report_date(to_date),
    }
    try:
        body = _request("GET", REPORT_PATH, payload, secrets=(private_token,))
    except AthmApiError as exc:
        if exc.code == NO_RECORDS:
            return []
        raise
    # Documented as a bare list; a list wrapped in {"data": [...]} is read the same way.
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        body = body["data"]
    if not isinstance(body, list):
        raise AthmApiError(f"the transaction report is not a list of transactions: {type(body).__name__}")
    return body


@sensitive_variables()
def refund(
    reference_number: str,
    amount: Decimal,
    *,
    message: str = "",
    public_token: str,
    private_token: str,
    timeout: float | None = None,
) -> Any:
    """Ask ATH Móvil to refund ``amount`` of the payment ``reference_number``; returns its answer, parsed:
    ``{"status": "success", "data": {"refund": {"referenceNumber", ...}, "originalTransaction": {...}}}``.

    ATH Móvil's refusals (``BTRA_`` codes) raise :class:`AthmApiError` with ``refused`` true; no answer, or
    one that is not ATH's, raises it with ``refused`` false: the refund may have been made."""
    payload = {
        "publicToken": public_token,
        "privateToken": private_token,
        "referenceNumber": reference_number,
        "amount": f"{amount:.2f}",
        "message": message,
    }
    return _request(
        "POST",
        REFUND_PATH,
        payload,
        secrets=(private_token,),
        base_url=athm_settings.ATHM_PAYMENTS_API_BASE_URL,
        timeout=REFUND_TIMEOUT if timeout is None else timeout,
    )


def check_refund_transport() -> None:
    """Raise ``ImproperlyConfigured`` when a refund would go over plain http off this machine: asked
    before a refund is recorded, so that a refund that cannot be sent leaves nothing behind."""
    _check_transport(endpoint(REFUND_PATH, athm_settings.ATHM_PAYMENTS_API_BASE_URL))


def _report_date(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(PUERTO_RICO)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def webhook_request(
    listener_url: str, events: Iterable[str], *, public_token: str, private_token: str
) -> dict[str, Any]:
    """The body of a subscription request: every one of ATH Móvil's six booleans is sent, true or false,
    so that a registration also unsubscribes from the events left out."""
    chosen = set(events)
    return {
        "publicToken": public_token,
        "privateToken": private_token,
        "listenerURL": listener_url,
        **{field: name in chosen for name, field in WEBHOOK_EVENTS.items()},
    }


def endpoint(path: str, base_url: str | None = None) -> str:
    """The full URL of ``path`` on ``base_url`` (default ``ATHM_API_BASE_URL``)."""
    return (base_url or athm_settings.ATHM_API_BASE_URL).rstrip("/") + path


@sensitive_variables()
def _request(
    method: str,
    path: str,
    payload: dict[str, Any],
    *,
    secrets: Secrets = (),
    base_url: str | None = None,
    timeout: float | None = None,
) -> Any:
    """Send ``payload`` as JSON to ``path`` and return the parsed answer, or raise :class:`AthmApiError`.

    ``method`` is a parameter because ATH Móvil's transactionReport is a GET with a JSON body.
    ``secrets`` (the private token) are blanked out of any text of the answer that an error quotes.
    A plain-http ``ATHM_API_BASE_URL`` off this machine raises ``ImproperlyConfigured``, before sending.
    """
    url = endpoint(path, base_url)
    timeout = TIMEOUT if timeout is None else timeout
    _check_transport(url)
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method=method,
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "athm-lambda",
        },
    )
    try:
        with _opener.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            status, raw = error.code, _read_quietly(error)
        if 300 <= status < 400:
            # Following it would turn the POST into a GET without the body: say where it pointed instead.
            location = error.headers.get("Location", "")
            raise AthmApiError(f"{url} redirects to {location or 'nowhere'}", status=status) from None
        raise _error_from_answer(status, raw, secrets) from None
    except TimeoutError:
        raise AthmApiError(f"{url} did not answer within {timeout:g} s") from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, TimeoutError):
            raise AthmApiError(f"{url} did not answer within {timeout:g} s") from None
        raise AthmApiError(f"cannot reach {url}: {reason}") from None
    except (OSError, http.client.HTTPException) as error:
        # A connection reset or closed before a complete answer (http.client.RemoteDisconnected, ...).
        raise AthmApiError(
            f"{url} closed the connection without an answer ({type(error).__name__})"
        ) from None

    body = _parse(status, raw, secrets)
    marker = _error_marker(body)
    if marker:
        raise _api_error(marker, status, secrets)
    return body


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _check_transport(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS):
        return
    raise ImproperlyConfigured(
        f"ATH Móvil's API must be reached over https:// (plain http only to this machine), not {url!r}"
    )


def _read_quietly(response: Any) -> bytes:
    try:
        return response.read()
    except (OSError, http.client.HTTPException):
        return b""


@sensitive_variables()
def _parse(status: int, raw: bytes, secrets: Secrets) -> Any:
    # ATH Móvil does not document the success body of every endpoint: an empty one is a plain success.
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise AthmApiError(f"the answer is not JSON: {_quote(raw, secrets)!r}", status=status) from None


@sensitive_variables()
def _error_from_answer(status: int, raw: bytes, secrets: Secrets) -> AthmApiError:
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        body = None
    marker = _error_marker(body, failed=True)
    if marker:
        return _api_error(marker, status, secrets)
    detail = f"an error answer: {_quote(raw, secrets)!r}" if raw.strip() else "an error answer without a body"
    return AthmApiError(detail, status=status)


def _error_marker(body: Any, *, failed: bool = False) -> tuple[str | None, str] | None:
    """``(code, message)`` when ``body`` is one of ATH Móvil's error answers, else ``None``.

    ATH Móvil answers errors as ``{"status": "error", "message": ..., "errorcode": "BTRA_0017"}`` and in
    a few other spellings (``errorCode``, ``errorMessage``, ``description``). ``failed`` is true when the
    HTTP status already says it failed, so any message found is the reason.
    """
    if not isinstance(body, dict):
        return None
    status = str(body.get("status") or "").strip().lower()
    code = next((str(body[key]) for key in ("errorcode", "errorCode", "error_code") if body.get(key)), None)
    message = next(
        (
            str(body[key])
            for key in ("message", "errorMessage", "description", "detail", "error")
            if isinstance(body.get(key), str) and body[key].strip()
        ),
        None,
    )
    said_error = (
        status in {"error", "fail", "failed", "failure"}
        or body.get("success") is False
        or (code is not None and status != "success")
    )
    if said_error or (failed and (code or message)):
        return code, message or "the request failed, without a message"
    return None


@sensitive_variables()
def _api_error(marker: tuple[str | None, str], status: int, secrets: Secrets) -> AthmApiError:
    code, message = marker
    return AthmApiError(
        _blank(message, secrets), status=status, code=code and _blank(code, secrets), refused=True
    )


@sensitive_variables()
def _quote(raw: bytes, secrets: Secrets) -> str:
    # Blanked before it is cut, so that no piece of a secret survives at the cut.
    text = _blank(raw.decode("utf-8", "replace").strip(), secrets)
    return text if len(text) <= _QUOTE_LIMIT else text[:_QUOTE_LIMIT] + "…"


@sensitive_variables()
def _blank(text: str, secrets: Secrets) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text
