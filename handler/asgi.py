"""Django as an ASGI app for Mangum, with every request handled on one long-lived thread.

Django's stock ``ASGIHandler`` runs each request's synchronous code on a fresh thread, so under Mangum a
warm Lambda container would open a new database connection on every invocation, and pay about twenty
event-loop turns for it. Lambda hands a container one request at a time, so this adapter gives the whole
request to a single worker thread that lives as long as the container: the database connection that
thread opens is the one every warm invocation reuses.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.core import signals
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.asgi import ASGIRequest, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.db import connections
from django.http import HttpResponse, HttpResponseBadRequest
from django.urls import set_script_prefix

T = TypeVar("T")


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

    def close_connections(self) -> None:
        """Close the worker thread's database connections (tests, and shutdown)."""
        self.call_on_worker(connections.close_all)

    def _respond(self, scope: dict, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        set_script_prefix(get_script_prefix(scope))
        # request_started and request_finished close a connection that is broken or too old.
        signals.request_started.send(sender=self.__class__, scope=scope)
        try:
            request = ASGIRequest(scope, io.BytesIO(body))
        except UnicodeDecodeError:
            response = HttpResponseBadRequest()
        except RequestDataTooBig:
            response = HttpResponse(status=413)
        else:
            response = self._handler.get_response(request)
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
