"""Run the Lambda function on this machine, without AWS or Docker.

``athm serve`` turns each HTTP request into an API Gateway HTTP API (payload 2.0) event and calls
``lambda_handler`` with it, one invocation at a time, as one Lambda container would (what
``sam local start-api`` does); each connection has its own thread, so a slow client holds up no other, and a
chunked body is read whole. ``athm invoke EVENT.json`` makes one invocation (what ``sam local invoke``
does). The event builders are shared with the tests and the benchmark.

The server's events carry ``X-Forwarded-Proto: http`` (unless a proxy in front sent its own): it serves
plain http, and the admin's CSRF check compares a browser's Origin with the scheme the event names.

``athm serve`` prints a line per request with the path cut to its route's name (``POST /webhook/…``), and
nothing of a request line it refuses but the numbers: the webhook secret is in the path, in whatever
spelling the caller typed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]

# A path's first segment that `athm serve` prints, when it names one of the routes; anything else in a path
# is elided, because the webhook secret can be anywhere in it, in any spelling (/WEBHOOK/<secret>,
# /%77ebhook/<secret>, /<secret>, /webhook?<secret>).
_ROUTES = frozenset({"webhook", "health", "admin", "static"})
_TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded")


@dataclass
class LocalContext:
    """The parts of Lambda's context object that Powertools and Mangum read."""

    function_name: str = "athm-webhook-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:athm-webhook-local"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_seconds: float = 30.0
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._started)) * 1000))


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def _encode_body(body: bytes, content_type: str) -> tuple[str, bool]:
    if content_type.startswith(_TEXT_TYPES):
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), True


def http_api_event(
    method: str,
    path: str,
    *,
    body: bytes | str = b"",
    headers: dict[str, str] | None = None,
    source_ip: str = "127.0.0.1",
    query: str = "",
    request_id: str | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API event (payload format 2.0), as API Gateway would send it."""
    body = _as_bytes(body)
    headers = {name.lower(): value for name, value in (headers or {}).items()}
    headers.setdefault("host", "localhost")
    if body:
        headers.setdefault("content-type", "application/json")
        headers.setdefault("content-length", str(len(body)))
    text, is_base64 = _encode_body(body, headers.get("content-type", ""))
    now = datetime.now(UTC)
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": headers["host"],
            "domainPrefix": "local",
            "http": {
                "method": method.upper(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id or uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "body": text,
        "isBase64Encoded": is_base64,
    }


def rest_api_event(
    method: str,
    path: str,
    *,
    body: bytes | str = b"",
    headers: dict[str, str] | None = None,
    source_ip: str = "127.0.0.1",
    request_id: str | None = None,
) -> dict[str, Any]:
    """An API Gateway REST API proxy event (payload format 1.0)."""
    body = _as_bytes(body)
    headers = dict(headers or {})
    headers.setdefault("Host", "localhost")
    if body:
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Content-Length", str(len(body)))
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    text, is_base64 = _encode_body(body, content_type)
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method.upper(),
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "httpMethod": method.upper(),
            "identity": {"sourceIp": source_ip, "userAgent": headers.get("User-Agent", "")},
            "path": f"/prod{path}",
            "protocol": "HTTP/1.1",
            "requestId": request_id or str(uuid.uuid4()),
            "resourcePath": "/{proxy+}",
            "stage": "prod",
        },
        "body": text,
        "isBase64Encoded": is_base64,
    }


def response_body(response: dict[str, Any]) -> bytes:
    """The body of a Lambda proxy response, decoded."""
    body = response.get("body") or ""
    return base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()


def invoke(lambda_handler: LambdaHandler, event: dict[str, Any]) -> dict[str, Any]:
    """One invocation, with a fresh context, as Lambda would make it."""
    return lambda_handler(event, LocalContext())


# The most ``athm serve`` reads of a chunked body (API Gateway's own payload limit is 10 MB).
MAX_CHUNKED_BODY = 10 * 1024 * 1024


def make_server(lambda_handler: LambdaHandler, host: str, port: int) -> HTTPServer:
    """An HTTP server that answers each request by invoking ``lambda_handler``. Each connection has its own
    thread, so a client slow to send its request or read its answer holds up no other; the invocations
    themselves run one at a time, as in one Lambda container. A body may come with a Content-Length or
    chunked (``Transfer-Encoding: chunked``, as curl sends one of unknown length): the function gets it
    whole, as API Gateway hands it over."""
    # One thread makes every invocation, as Lambda's runtime does, with an event loop of its own for Mangum.
    invoker = ThreadPoolExecutor(
        max_workers=1,
        thread_name_prefix="lambda-runtime",
        initializer=lambda: asyncio.set_event_loop(asyncio.new_event_loop()),
    )

    class ApiGateway(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "athm-local"

        def _invoke(self) -> None:
            path, _, query = self.path.partition("?")
            body = self._body()
            if body is None:
                self.close_connection = True  # the rest of the refused body must not be read as a request
                return
            headers = {
                name: value for name, value in self.headers.items() if name.lower() != "transfer-encoding"
            }
            if not any(name.lower() == "x-forwarded-proto" for name in headers):
                # This server speaks plain http. Mangum takes the scheme from X-Forwarded-Proto (https
                # without it, as API Gateway always is), and Django's CSRF check compares a browser's
                # Origin with that scheme: an https event refuses every form posted to http://127.0.0.1.
                # A proxy in front (a tunnel serving https) names its own scheme, which is kept.
                headers["x-forwarded-proto"] = "http"
            event = http_api_event(
                self.command, path, body=body, headers=headers, source_ip=self.client_address[0], query=query
            )
            response = invoker.submit(invoke, lambda_handler, event).result()
            body = response_body(response)
            self.send_response(response.get("statusCode", 502))
            for name, value in (response.get("headers") or {}).items():
                if name.lower() not in ("content-length", "connection"):
                    self.send_header(name, value)
            for cookie in response.get("cookies") or []:
                self.send_header("Set-Cookie", cookie)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes | None:
            """The request's body, or None once a refusal has been sent (API Gateway refuses such a
            request itself, before the function)."""
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                return self._chunked()
            declared = (self.headers.get("Content-Length") or "0").strip()
            if not (declared.isascii() and declared.isdigit()):
                self.send_error(400, "Content-Length is not a number of bytes")
                return None
            length = int(declared)
            return self.rfile.read(length) if length else b""

        def _chunked(self) -> bytes | None:
            body = bytearray()
            while True:
                size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    self.send_error(400, "a chunk's size is not a hexadecimal number")
                    return None
                if size == 0:
                    break
                if len(body) + size > MAX_CHUNKED_BODY:
                    self.send_error(413, "the body is larger than API Gateway accepts")
                    return None
                body += self.rfile.read(size)
                self.rfile.readline(1024)  # the CRLF after the chunk
            while self.rfile.readline(1024).strip():  # trailers, up to the empty line
                pass
            return bytes(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _invoke

        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            # The default line is the request line, path and webhook secret included: the route alone.
            # No path at all when the request line did not parse.
            path = printable_path(getattr(self, "path", ""))
            print(f'"{self.command or "-"} {path}" {getattr(code, "value", code)}', flush=True)

        def log_message(self, format: str, *args: Any) -> None:
            # What else the server logs are its refusals, which quote the request line: their numbers only.
            print(format % tuple(arg if isinstance(arg, int) else "…" for arg in args), flush=True)

    server = ThreadingHTTPServer((host, port), ApiGateway)
    server.daemon_threads = True
    return server


def printable_path(path: str) -> str:
    """``path`` as ``athm serve`` prints it: the route's name, if the first segment is one (in any case), and
    ``…`` for everything else: ``/webhook/<secret>?a=1`` -> ``/webhook/…?…``."""
    path, query_mark, _ = path.partition("?")
    first, slash, rest = path.lstrip("/").partition("/")
    shown = "/" + (first if first.lower() in _ROUTES or not first else "…")
    if slash:
        shown += "/…" if rest else "/"
    return shown + ("?…" if query_mark else "")


def load_event(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        event = json.load(handle)
    if not isinstance(event, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return event


def no_secret_warning(example: str = "") -> str:
    """What ``athm serve`` and ``athm invoke`` say, on stderr, when no webhook secret is configured."""
    value = example or "$(athm new_secret)"
    return (
        "ATHM_WEBHOOK_SECRET is not set: every webhook gets 404 (the secret is the last segment of the URL "
        f"ATH Móvil posts to). Set it, e.g. ATHM_WEBHOOK_SECRET={value} (`athm new_secret` makes a good "
        "one), or ATHM_WEBHOOK_SECRET_ARN for one in Secrets Manager."
    )
