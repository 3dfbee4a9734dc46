"""Work the webhook function does after its answer has gone: publishing the outbox to SNS, in Lambda.

Lambda freezes a container once the handler has returned and every registered extension has asked for its
next event. An *internal extension*, a thread of the function's own process registered with Lambda's
Extensions API for ``INVOKE`` events, keeps the invocation open after the answer until it asks: AWS's
documented way to run code after returning a response (the Extensions API reference; AWS Compute Blog,
"Running code after returning a response from an AWS Lambda function"). The caller (API Gateway, so ATH
Móvil) has its answer as soon as the handler returns; Lambda waits for the extension before it hands the
container another event or freezes it, and bills that time as part of the invocation.

In the webhook function (``handler.app``):

- :func:`register`, at import, registers the extension's thread (in Lambda only, and not under SnapStart:
  see below);
- :func:`later` keeps work for after the answer (the publisher's, once a delivery's transaction has
  committed); without a registered extension it runs the work at once, as every other entry point does;
- :func:`answered`, the handler's last step (:func:`hands_over` decorates the handler), hands the
  invocation's work to the Django worker thread (where the container's database connection lives), and the
  extension asks for the next event once it is done, or when the invocation's deadline is a second away.

What it buys: ATH Móvil's answer no longer waits for SNS (a round trip, up to three attempts when SNS is
slow), and an on-demand cold start answers before it imports boto3 (``handler.app`` then makes the SNS
client after the first answer). What it cannot lose: the work is the outbox's, so a publish that fails, is
cut short by the deadline or never runs (the container frozen, killed) leaves its messages pending, and the
relay publishes them (``handler.publisher``).

Not under SnapStart (``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``): the snapshot already holds boto3 and the
SNS client, so publishing before the answer costs only the round trip, and an extension thread's pending
request to the Extensions API would be part of the snapshot, which we cannot test outside Lambda.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from handler.observability import logger

# Work kept for after the answer: called with the time.monotonic() by which it must be done.
Work = Callable[[float | None], None]

_API_VERSION = "2020-01-01"
_NAME = "athm-after-answer"
# The extension asks for the next event this long before the invocation's deadline, work done or not, so
# that the invocation ends, rather than timing out, when the work overruns.
_MARGIN = 1.0
# Waited before asking the Extensions API again after it failed to answer (it never does, in Lambda).
_RETRY_PAUSE = 0.05


class _Extension:
    """The registered extension: its thread, and the invocations' work handed to it."""

    def __init__(
        self, api: str, identifier: str, run: Callable[[Callable[[], None]], Future], then: Callable[[], None]
    ) -> None:
        self.api = api
        self.identifier = identifier
        self.run = run
        self.then = then
        self.kept: list[Work] = []
        self.done: dict[str, Future] = {}
        self.handed = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, name=_NAME, daemon=True)

    def _loop(self) -> None:
        # Never ends while the container lives: Lambda waits for this thread's next request on every
        # invocation, so whatever goes wrong, the thread asks again.
        while not self.stopped:
            try:
                event = self._next_event()
            except Exception as exc:
                if self.stopped:
                    return
                error = type(exc).__name__
                logger.warning("the Extensions API did not answer; asking again", extra={"error_type": error})
                time.sleep(_RETRY_PAUSE)
                continue
            if event.get("eventType") == "INVOKE":
                self._finish(str(event.get("requestId", "")), event.get("deadlineMs"))

    def _next_event(self) -> dict[str, Any]:
        # No timeout, whatever socket.setdefaulttimeout() says: it blocks until the next event.
        connection = http.client.HTTPConnection(self.api, timeout=None)
        try:
            connection.request(
                "GET",
                f"/{_API_VERSION}/extension/event/next",
                headers={"Lambda-Extension-Identifier": self.identifier},
            )
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise ConnectionError(f"event/next answered {response.status}")
            return json.loads(body)
        finally:
            connection.close()

    def _finish(self, request_id: str, deadline_ms: Any) -> None:
        """Wait for the handler's answer to ``request_id``, then for its work, until the deadline is near."""
        try:
            ends = float(deadline_ms) / 1000 - _MARGIN  # epoch seconds
        except (TypeError, ValueError):
            ends = time.time() + 15 * 60 - _MARGIN  # Lambda's longest invocation
        with self.handed:
            self.handed.wait_for(lambda: request_id in self.done, timeout=max(0.0, ends - time.time()))
            done = self.done.pop(request_id, None)
            self.done.clear()  # one invocation at a time: anything else is stale
        if done is None:
            logger.warning("no answer to hand over before the deadline", extra={"request_id": request_id})
            return
        try:
            done.result(timeout=max(0.0, ends - time.time()))
        except TimeoutError:
            logger.warning(
                "work after the answer overran the invocation: what it did not finish is left pending",
                extra={"request_id": request_id},
            )
        except Exception as exc:  # the work's own failures are its business; the thread goes on
            logger.warning("work after the answer failed", extra={"error_type": type(exc).__name__})

    def answered(self, request_id: str, deadline: float | None) -> None:
        work, self.kept = self.kept, []
        done = self.run(lambda: _run_all(work, deadline, self.then)) if work else _finished()
        with self.handed:
            self.done[request_id] = done
            self.handed.notify_all()


_extension: _Extension | None = None


def register(run: Callable[[Callable[[], None]], Future], then: Callable[[], None] = lambda: None) -> bool:
    """Register the extension with the Extensions API (during init: Lambda refuses it afterwards) and start
    its thread; ``run`` submits a call to the thread that works after the answer, which calls ``then``
    after each invocation's work (the handler writes its metrics there). Whether it registered:
    not outside Lambda, not under SnapStart, not when the API refuses (a warning says why; work then runs
    at once, before the answer)."""
    global _extension
    api = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not api or os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":
        return False
    try:
        identifier = _register(api)
    except Exception as exc:
        logger.warning(
            "could not register with Lambda's Extensions API: SNS messages are published before the answer",
            extra={"error_type": type(exc).__name__, "error": str(exc)[:200]},
        )
        return False
    _extension = _Extension(api, identifier, run, then)
    _extension.thread.start()
    return True


def _register(api: str) -> str:
    connection = http.client.HTTPConnection(api, timeout=2)
    try:
        connection.request(
            "POST",
            f"/{_API_VERSION}/extension/register",
            body=json.dumps({"events": ["INVOKE"]}),
            headers={"Lambda-Extension-Name": _NAME, "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        body = response.read()
        identifier = response.getheader("Lambda-Extension-Identifier")
        if response.status != 200 or not identifier:
            raise ConnectionError(f"register answered {response.status}: {body[:200]!r}")
        return identifier
    finally:
        connection.close()


def active() -> bool:
    """Whether work waits for the answer in this process."""
    return _extension is not None


def later(work: Work) -> None:
    """Do ``work`` after this invocation's answer, or at once (``deadline`` None) without the extension."""
    if _extension is None:
        work(None)
    else:
        _extension.kept.append(work)


def hands_over(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Decorates a Lambda handler: once it has its answer (or has raised), :func:`answered`."""

    @functools.wraps(handler)
    def handle(event: Any, context: Any) -> Any:
        try:
            return handler(event, context)
        finally:
            answered(context)

    return handle


def answered(context: Any) -> None:
    """The handler has its answer to the invocation of Lambda's ``context``: start the work kept for after
    it, to be done before the invocation's time is up (less a margin). Does nothing without the extension."""
    if _extension is None:
        return
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - _MARGIN
    _extension.answered(context.aws_request_id, deadline)


def stop() -> None:
    """Forget the extension (tests): work runs at once again; its thread ends at its next answer."""
    global _extension
    if _extension is not None:
        _extension.stopped = True
        _extension = None


def _run_all(work: list[Work], deadline: float | None, then: Callable[[], None]) -> None:
    for item in [*work, lambda deadline: then()]:
        try:
            item(deadline)
        except Exception as exc:  # one item's failure does not keep the others from running
            logger.warning("work after the answer failed", extra={"error_type": type(exc).__name__})


def _finished() -> Future:
    done: Future = Future()
    done.set_result(None)
    return done
