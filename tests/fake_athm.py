"""A fake ATH Móvil business API on 127.0.0.1, for tests of the calls this project makes to ATH Móvil.

It records every request (method, path, headers, body) and answers each path as the test says: a status
and a JSON body, raw bytes (a body that is not JSON), a delay (a slow ATH Móvil), or a connection closed
without an answer. A path that no test configured answers 404 with ATH Móvil's error shape.

Use the ``fake_athm`` fixture, which also points ``ATHM_API_BASE_URL`` at it for the test::

    from tests.fake_athm import fake_athm_fixture  # noqa: F401

    def test_something(fake_athm):
        fake_athm.answer("/transactions/webhook/post", 200, {"status": "success"})
        ...
        assert fake_athm.requests[0].json["listenerURL"] == ...

For a child process, pass ``ATHM_API_BASE_URL=fake_athm.base_url`` in its environment.

``answer_by(path, choose)`` answers each request to ``path`` from a table the test controls: ``choose`` gets
the request's JSON body and returns the :class:`Answer` (say, findPayment's answer for that ecommerceId).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(frozen=True)
class Request:
    """One request as the fake received it: ``path`` without the query, ``headers`` with lower-case names."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    """How the fake answers one path: ``raw`` (bytes) wins over ``body`` (JSON); ``close`` answers nothing."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"status": "success"})
    raw: bytes | None = None
    delay: float = 0.0
    close: bool = False
    headers: dict[str, str] = field(default_factory=dict)


_NOT_CONFIGURED = Answer(404, {"status": "error", "message": "the fake has no answer for this path"})


class FakeAthm:
    """The server. ``answer()`` configures a path; ``requests`` lists what arrived, oldest first."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._answers: dict[str, Answer] = {}
        self._choosers: dict[str, Callable[[Any], Answer]] = {}
        self._lock = threading.Lock()
        # Set on close, so that a delayed answer ends at once instead of holding the test's teardown.
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-athm", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def environment(self, public_token: str, private_token: str = "") -> dict[str, str]:
        """The environment that points a child process (``athm serve``, ``athm shell``) at this fake, with
        these tokens, and verification off: the deliveries its tests post are applied as they are."""
        env = {
            "ATHM_API_BASE_URL": self.base_url,
            "ATHM_PAYMENTS_API_BASE_URL": self.base_url,
            "ATHM_PUBLIC_TOKEN": public_token,
            "ATHM_VERIFY": "0",
        }
        if private_token:
            env["ATHM_PRIVATE_TOKEN"] = private_token
        return env

    def answer(
        self,
        path: str,
        status: int = 200,
        body: Any = None,
        *,
        raw: bytes | None = None,
        delay: float = 0.0,
        close: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer every later request to ``path`` (any method) like this."""
        answer = Answer(
            status, {"status": "success"} if body is None else body, raw, delay, close, headers or {}
        )
        with self._lock:
            self._answers[path] = answer
            self._choosers.pop(path, None)

    def answer_by(self, path: str, choose: Callable[[Any], Answer]) -> None:
        """Answer every later request to ``path`` with ``choose(the request's JSON body)``."""
        with self._lock:
            self._choosers[path] = choose
            self._answers.pop(path, None)

    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [request for request in self.requests if request.path == path]

    def start(self) -> FakeAthm:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                path, _, query = self.path.partition("?")
                request = Request(
                    method=self.command,
                    path=path,
                    query=query,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=self.rfile.read(length),
                )
                with fake._lock:
                    fake.requests.append(request)
                    choose = fake._choosers.get(path)
                    answer = fake._answers.get(path, _NOT_CONFIGURED)
                if choose is not None:
                    answer = choose(request.json)
                if answer.delay and fake._closing.wait(answer.delay):
                    return
                if answer.close:
                    # Nothing written: the client sees the connection end without an answer.
                    self.close_connection = True
                    return
                payload = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
                self.send_response(answer.status)
                headers = {"Content-Type": "application/json", **answer.headers}
                for name, value in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(OSError):  # the client gave up waiting (a timeout test)
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test reads fake.requests, not stderr

        return Handler


# Named apart from the fixture so that a test module can import it without its parameters shadowing it.
@pytest.fixture(name="fake_athm")
def fake_athm_fixture(settings) -> Iterator[FakeAthm]:
    """A running fake ATH Móvil, with both of ATH Móvil's API hosts pointing at it for this test."""
    server = FakeAthm().start()
    settings.ATHM_API_BASE_URL = server.base_url
    settings.ATHM_PAYMENTS_API_BASE_URL = server.base_url
    yield server
    server.close()
