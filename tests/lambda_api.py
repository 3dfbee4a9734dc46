"""A stand-in for the Extensions API of Lambda's Runtime API, on 127.0.0.1: what ``handler.after_answer``
talks to in Lambda (``AWS_LAMBDA_RUNTIME_API``).

It answers as the Extensions API reference documents: ``POST /2020-01-01/extension/register`` with a
``Lambda-Extension-Identifier`` header, and ``GET /2020-01-01/extension/event/next``, which blocks until
the next event. The test (or the benchmark) plays Lambda's side: :meth:`ExtensionsApi.invoke` hands an
``INVOKE`` event to the registered extension, as Lambda does when it hands the runtime an invocation, and
:meth:`ExtensionsApi.released` tells when the extension has asked for the next event again: when Lambda
would end the invocation. ``refuse`` makes registration answer 403, as Lambda does after init.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ExtensionsApi(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.registered: list[dict[str, Any]] = []  # {"name", "events", "identifier"}
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.asked = threading.Condition()
        self.next_calls: list[float] = []  # time.monotonic() of each event/next request
        super().__init__(("127.0.0.1", 0), _Answer)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def invoke(self, request_id: str | None = None, *, seconds: float = 25.0) -> str:
        """Hand an INVOKE event (the invocation ``request_id``, ending in ``seconds``) to the extension."""
        request_id = request_id or str(uuid.uuid4())
        self.events.put(
            {
                "eventType": "INVOKE",
                "deadlineMs": int((time.time() + seconds) * 1000),
                "requestId": request_id,
                "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:athm-webhook",
                "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-5759e988-bd862e3fe1be46a994272793"},
            }
        )
        return request_id

    def released(self, calls: int, timeout: float = 10.0) -> bool:
        """Whether the extension has asked for the next event ``calls`` times (within ``timeout``)."""
        with self.asked:
            return self.asked.wait_for(lambda: len(self.next_calls) >= calls, timeout=timeout)

    def stop(self) -> None:
        self.events.put({"eventType": "SHUTDOWN", "shutdownReason": "spindown"})  # frees a waiting request
        self.shutdown()
        self.server_close()


class _Answer(BaseHTTPRequestHandler):
    server: ExtensionsApi

    def do_POST(self) -> None:
        if self.path != "/2020-01-01/extension/register":
            return self._send(404, {"errorType": "NotFound"})
        if self.server.refuse:
            return self._send(403, {"errorType": "Extension.ForbiddenRegistration"})
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        identifier = str(uuid.uuid4())
        self.server.registered.append(
            {
                "name": self.headers.get("Lambda-Extension-Name"),
                "events": request.get("events"),
                "identifier": identifier,
            }
        )
        function = {
            "functionName": "athm-webhook",
            "functionVersion": "$LATEST",
            "handler": "handler.app.lambda_handler",
        }
        self._send(200, function, {"Lambda-Extension-Identifier": identifier})

    def do_GET(self) -> None:
        known = {extension["identifier"] for extension in self.server.registered}
        if self.path != "/2020-01-01/extension/event/next":
            return self._send(404, {"errorType": "NotFound"})
        if self.headers.get("Lambda-Extension-Identifier") not in known:
            return self._send(403, {"errorType": "Extension.InvalidExtensionIdentifier"})
        with self.server.asked:
            self.server.next_calls.append(time.monotonic())
            self.server.asked.notify_all()
        event = self.server.events.get()
        self._send(200, event, {"Lambda-Extension-Event-Identifier": str(uuid.uuid4())})

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the process that asked has ended (a test's child, a benchmark's cold start)

    def log_message(self, format: str, *args: Any) -> None:
        pass
