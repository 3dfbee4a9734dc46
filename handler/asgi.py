"""Django behind Mangum: the Lambda events read as HTTP requests, and every request handled on one
long-lived thread, with an answer in the views' JSON whatever the request.

The events. Mangum reads API Gateway's HTTP API (payload 2.0) and REST (1.0) events; ``HttpApiEvent`` and
``RestApiEvent`` are its own handlers for them with two things added:

- A named stage is taken off the front of the path when it is there, with no setting: an HTTP API's
  execute-api URL sends ``/prod/webhook/...``, and so does a REST API behind a custom domain mapped without
  a stage, while a REST API's own URL and a custom domain mapped to the stage leave it out (``$default`` is
  never in a path). A custom domain's base path is Mangum's ``api_gateway_base_path``
  (``ATHM_API_GATEWAY_BASE_PATH``), taken off first: REST sends ``/<base path>/<stage>/...``.
- An event whose method, path, headers, query string or body cannot be read as a request (a Host whose port
  is not a number, text that cannot be encoded, a body marked base64 that is not) reaches the app marked as
  such, and is answered 400 without Django, where Mangum would raise out of the Lambda handler.

``Adapter`` is Mangum with those two handlers; an invocation that is no HTTP request at all (a keep-warm
schedule, a warm-up plugin's ping, a console test event, anything Mangum cannot infer) is answered with a
small document and counted as ``NonHttpInvocation``, where Mangum would raise: an error per ping.

One thread. Django's stock ``ASGIHandler`` runs each request's synchronous code on a fresh thread, so under
Mangum a warm Lambda container would open a new database connection on every invocation, and pay about
twenty event-loop turns for it. Lambda hands a container one request at a time, so ``DjangoOnOneThread``
gives the whole request to a single worker thread that lives as long as the container: the database
connection that thread opens is the one every warm invocation reuses. Before Django sees a request it
checks what Django would only check when asked (the Host, against ``ALLOWED_HOSTS``) or not at all (that
Content-Length is a number), and any failure of its own is the views' JSON 500.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cached_property
from itertools import chain
from typing import Any, TypeVar

from django.core import signals
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import ASGIRequest, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.db import connections
from django.http import HttpResponseBase
from django.urls import set_script_prefix
from mangum import Mangum
from mangum.adapter import HANDLERS
from mangum.handlers import APIGateway, HTTPGateway

from handler import views
from handler.observability import count, logger

T = TypeVar("T")

# The scope key that marks a request the event could not describe; its value says which part, for the 400.
UNREADABLE = "athm.unreadable"
# What a ValueError (UnicodeError and binascii.Error among them), a KeyError, ... means while Mangum reads an
# event: a part missing, of the wrong type, or not text.
_UNREADABLE_PARTS = (AttributeError, IndexError, KeyError, TypeError, ValueError)


class _ApiGatewayEvent:
    """What both API Gateway shapes add to Mangum's handler: the stage off the path, and no exception for
    an event that cannot be read. Scope and body are read once (Mangum asks for the scope again to answer)."""

    event: dict[str, Any]
    context: Any

    @property
    def scope(self) -> dict[str, Any]:
        return self._request[0]

    @property
    def body(self) -> bytes:
        return self._request[1]

    @cached_property
    def _request(self) -> tuple[dict[str, Any], bytes]:
        try:
            scope = super().scope
        except _UNREADABLE_PARTS:
            return self._unreadable("the request's method, path, headers or query string cannot be read")
        try:
            body = self._body()
        except _UNREADABLE_PARTS:
            if self.event.get("isBase64Encoded"):
                return self._unreadable("the body is marked as base64 but is not base64")
            return self._unreadable("the body is not text")
        scope["path"] = _without_stage(scope["path"], (self.event.get("requestContext") or {}).get("stage"))
        return scope, body

    def _body(self) -> bytes:
        if self.event.get("isBase64Encoded"):
            # Strictly: API Gateway's base64 is the alphabet alone, and Mangum's decoder would skip anything
            # else, turning text that is not base64 into some other body.
            return base64.b64decode(self.event.get("body") or b"", validate=True)
        return super().body

    def _unreadable(self, why: str) -> tuple[dict[str, Any], bytes]:
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "",
            "path": "",
            "raw_path": None,
            "root_path": "",
            "scheme": "https",
            "query_string": b"",
            "headers": [],
            "server": None,
            "client": None,
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "aws.event": self.event,
            "aws.context": self.context,
            UNREADABLE: why,
        }
        return scope, b""


class HttpApiEvent(_ApiGatewayEvent, HTTPGateway):
    """An HTTP API event (payload 2.0, or 1.0 with a ``version``), or a Lambda function URL's."""


class RestApiEvent(_ApiGatewayEvent, APIGateway):
    """A REST API proxy event (payload 1.0)."""


def _without_stage(path: str, stage: Any) -> str:
    # Only a whole first segment is the stage: a stage "web" leaves /webhook/... alone. A stage named like
    # the route's first segment ("webhook") would be taken off a path that does not carry it: name stages
    # otherwise.
    if not isinstance(stage, str) or not stage or stage == "$default":
        return path
    prefix = f"/{stage}"
    if path == prefix or path.startswith(prefix + "/"):
        return path[len(prefix) :] or "/"
    return path


class Adapter(Mangum):
    """Mangum with the two API Gateway handlers above, which answers an invocation that is not an HTTP
    request instead of raising."""

    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app, custom_handlers=[HttpApiEvent, RestApiEvent], **options)

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        if not self._is_http(event, context):
            return _not_http(event)
        try:
            return super().__call__(event, context)
        except _UNREADABLE_PARTS:
            # Mangum's own handlers (a load balancer's event) trip over an event they inferred but cannot
            # read; the app itself never raises (DjangoOnOneThread answers its failures).
            return _unreadable_event()

    def _is_http(self, event: Any, context: Any) -> bool:
        if not isinstance(event, dict):
            return False
        try:
            return any(
                handler.infer(event, context, self.config)
                for handler in chain(self.custom_handlers, HANDLERS)
            )
        except _UNREADABLE_PARTS:  # a shape Mangum's inference trips over (Records: 7) is no request either
            return False


def _unreadable_event() -> dict[str, Any]:
    response = views.unreadable("the event cannot be read as a request")
    return {
        "statusCode": response.status_code,
        "headers": {"content-type": response["Content-Type"]},
        "body": response.content.decode(),
        "isBase64Encoded": False,
    }


def _not_http(event: Any) -> dict[str, Any]:
    count("NonHttpInvocation")
    source = event.get("source") if isinstance(event, dict) else None
    # The source only (aws.events, serverless-plugin-warmup): the event itself may hold anything.
    logger.debug(
        "not an HTTP request: answered without Django",
        extra={"source": source[:100] if isinstance(source, str) else None},
    )
    return {"ok": True, "detail": "not an HTTP request; nothing was done"}


class DjangoOnOneThread:
    """An ASGI ``http`` app that runs Django's synchronous request handling on one worker thread."""

    def __init__(self) -> None:
        self._handler = BaseHandler()
        self._handler.load_middleware(is_async=False)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="django")

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            raise ValueError(f"only HTTP is served, not {scope['type']!r}")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        loop = asyncio.get_running_loop()
        status, headers, content = await loop.run_in_executor(self._worker, self._respond, scope, bytes(body))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def call_on_worker(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function`` on the worker thread, where the reused database connection lives."""
        return self._worker.submit(function, *args).result()

    def submit_on_worker(self, function: Callable[[], Any]) -> Future:
        """Start ``function`` on the worker thread, after whatever it is doing; its future."""
        return self._worker.submit(function)

    def close_connections(self) -> None:
        """Close the worker thread's database connections (tests, and shutdown)."""
        self.call_on_worker(connections.close_all)

    def _respond(self, scope: dict, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        set_script_prefix(get_script_prefix(scope))
        # request_started and request_finished close a connection that is broken or too old.
        signals.request_started.send(sender=self.__class__, scope=scope)
        try:
            response = self._response(scope, body)
        except Exception as exc:
            # Django answers what a view raises (handler500); this is what it raised outside a view, or the
            # adapter did. The type only: an exception's text may quote the request.
            logger.error("the request could not be handled", extra={"error_type": type(exc).__name__})
            response = views.server_error(None)
        response._handler_class = self.__class__
        try:
            headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in response.items()]
            headers += [
                (b"set-cookie", cookie.output(header="").strip().encode("ascii"))
                for cookie in response.cookies.values()
            ]
            return response.status_code, headers, b"".join(response)
        finally:
            response.close()

    def _response(self, scope: dict, body: bytes) -> HttpResponseBase:
        if scope.get(UNREADABLE):
            return views.unreadable(scope[UNREADABLE])
        try:
            request = ASGIRequest(scope, io.BytesIO(body))
            # Django checks the Host (its form, and ALLOWED_HOSTS) only when something asks; nothing here
            # would, so a request for another host, or for no valid host at all, would be served.
            request.get_host()
        except (UnicodeDecodeError, SuspiciousOperation) as exc:
            return views.bad_request(None, exc)
        declared = request.META.get("CONTENT_LENGTH", "").strip()
        if declared and not (declared.isascii() and declared.isdigit()):
            return views.unreadable("the Content-Length header is not a number of bytes")
        # API Gateway hands over the whole body, so its size is known: the views measure that, not the
        # client's claim, and a body without a Content-Length meets the webhook's limit, not Django's ceiling.
        request.META["CONTENT_LENGTH"] = str(len(body))
        return self._handler.get_response(request)
