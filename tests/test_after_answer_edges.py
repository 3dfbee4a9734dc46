"""The edges of the publish after the answer (handler.after_answer) and of the Secrets Manager fall-back to
boto3, found by a review: the invocation never ends inside a claim's transaction (a frozen container would
keep the rows locked), the wait for the next event ignores a process-wide socket timeout, a fall-back read
is not undone by the next one, and its warning says which secret and why."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest
from django.db import connection, connections

from athm_core.models import OutboxMessage
from handler import after_answer, publisher, secrets_manager
from tests import test_after_answer, test_secrets_extension
from tests.lambda_api import ExtensionsApi
from tests.test_after_answer import body, post

# The fixtures of the modules under review, shared rather than copied.
extensions_api = test_after_answer.extensions_api
extension = test_secrets_extension.extension
secretsmanager = test_secrets_extension.secretsmanager
nothing_read = test_secrets_extension.nothing_read  # autouse: no secret read is kept between tests

# --- after the answer: the invocation must not end inside the publish's transaction ----------------------


class _SlowSnsOnTheWorker:
    """SNS as it is in a brownout, for the webhook container's worker thread only: one Publish call takes
    ``seconds`` (less than one attempt's read timeout, publisher._READ_TIMEOUT = 3 s, and botocore makes up
    to three attempts) and then fails. ``gate`` cuts the wait short. Any other thread (the relay, here the
    test) gets the real client."""

    def __init__(self, real, seconds: float) -> None:
        self.real = real
        self.seconds = seconds
        self.gate = threading.Event()

    def publish(self, **request):
        if not threading.current_thread().name.startswith("django"):
            return self.real.publish(**request)
        self.gate.wait(self.seconds)
        raise TimeoutError("Read timeout on endpoint URL")


@pytest.fixture
def slow_sns(monkeypatch, make_topic):
    make_topic()
    fake = _SlowSnsOnTheWorker(publisher.sns_client(), seconds=3.0)
    with monkeypatch.context() as patch:  # undone before moto's fixture forgets the client
        patch.setattr(publisher, "sns_client", lambda: fake)
        yield fake
        fake.gate.set()


def _worker_idle(lambda_handler) -> None:
    done = threading.Event()
    lambda_handler.app.application.submit_on_worker(done.set)
    assert done.wait(15)


def test_the_invocation_does_not_end_while_the_publish_holds_the_outbox_rows_in_a_transaction(
    extensions_api,
    lambda_handler,
    slow_sns,
):
    """2.5 s left: the publish starts at once (its deadline, 1 s before the invocation's, is not reached),
    inside outbox.claim's transaction (SELECT ... FOR UPDATE SKIP LOCKED). One SNS call may take up to
    3 x (1 s + 3 s) with the configured timeouts; this one takes 3 s. The extension asks for the next event
    1 s before the deadline whatever the work is doing, and Lambda then freezes the container: with the
    transaction open and the message's row locked, for as long as the container stays frozen."""
    worker_connection = lambda_handler.app.application.call_on_worker(lambda: connections["default"])
    request_id = extensions_api.invoke(seconds=2.5)
    response = post(lambda_handler, body("payment_received"), request_id, seconds=2.5)
    assert response.status == 200
    try:
        assert extensions_api.released(2, timeout=4)  # Lambda ends the invocation: the container may freeze
        # What the container holds at that moment is what it holds while frozen.
        assert not worker_connection.in_atomic_block, (
            "the invocation ended (container frozen) inside outbox.claim's transaction, with the outbox "
            "rows locked FOR UPDATE"
        )
    finally:
        slow_sns.gate.set()
        _worker_idle(lambda_handler)


def test_a_message_in_flight_when_the_invocation_ends_can_still_be_relayed_by_another_container(
    extensions_api,
    lambda_handler,
    slow_sns,
):
    """The observable cost of the above on PostgreSQL and MariaDB: while the webhook's container is frozen
    mid-publish, the relay (another container) skips the locked message (SKIP LOCKED), and every later
    message of the same payment waits behind it (outbox._in_group_order), until the container is thawed or
    the database drops its connection (TCP keepalive, wait_timeout: minutes to hours)."""
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has no row locks (run with DATABASE_URL=postgres://... or mysql://...)")
    request_id = extensions_api.invoke(seconds=2.5)
    response = post(lambda_handler, body("payment_received"), request_id, seconds=2.5)
    assert response.status == 200
    try:
        assert extensions_api.released(2, timeout=4)
        # The container is frozen now (the gate stays shut); the relay runs elsewhere.
        report = publisher.relay(retry_now=True)
        assert report.published == 1, f"the relay could not take the message: {report.as_dict()}"
    finally:
        slow_sns.gate.set()
        _worker_idle(lambda_handler)
    assert OutboxMessage.objects.get().published_at is not None


def test_the_wait_for_the_next_event_does_not_obey_the_process_wide_default_socket_timeout(
    monkeypatch, lambda_handler
):
    """The extension's GET .../event/next is meant to block until Lambda's next event ("no timeout"), but
    HTTPConnection without ``timeout=`` takes ``socket.getdefaulttimeout()``, which any module in the
    process may set (the merchant's receivers are imported into it). Then, once an idle (frozen) container
    is thawed, the pending request times out, the extension asks again, and Lambda takes that second request
    as the end of the invocation it has just started: the publish runs unguarded, as without the extension.
    Here: one pending request is expected while the container idles; the extension makes one every 0.2 s."""
    api = ExtensionsApi()
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", api.address)
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(0.2)  # as a library imported by a receiver module may do
    try:
        assert after_answer.register(lambda_handler.app.application.submit_on_worker)
        assert api.released(1)
        time.sleep(1.0)  # the container between invocations
        assert len(api.next_calls) == 1, f"{len(api.next_calls)} requests for the next event, not one"
    finally:
        socket.setdefaulttimeout(previous)
        after_answer.stop()
        api.stop()


# --- secrets: the fall-back to boto3 ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "database"])
def test_a_fresh_read_that_fell_back_to_boto3_is_not_undone_by_the_next_read(
    extension,
    secretsmanager,
    kind,
):
    """A rotation: the value was read through the extension, then the secret rotates while the extension
    fails (throttled, overloaded: 5xx). The fresh read (the database backend's, after a refused password)
    falls back to boto3 and gets the new value; the next ordinary read must not hand back the old one from
    the extension's cache (it does, for up to five minutes: every new connection is first refused)."""
    old, new = (
        ("old-value", "new-value") if kind == "plain" else ('{"password": "old"}', '{"password": "new"}')
    )
    read = secrets_manager.read if kind == "plain" else secrets_manager.database_secret
    arn = secretsmanager.create_secret(Name="athm-secret", SecretString=old)["ARN"]
    extension.values[arn] = {"ARN": arn, "SecretString": old}
    first = read(arn)

    secretsmanager.put_secret_value(SecretId=arn, SecretString=new)
    extension.values[arn]["SecretString"] = new
    extension.fail_with = 500
    fresh = read(arn, fresh=True)
    assert fresh != first  # boto3 read the rotated value

    assert read(arn) == fresh, "the next read went back to the value the fresh read replaced"


def test_the_fall_back_warning_says_which_secret_and_why_in_its_message(
    extension,
    secretsmanager,
    caplog,
):
    """The warning goes to the standard ``logging`` logger ``handler.secrets_manager`` (not Powertools', not
    one boot.py configures), so in Lambda it reaches the runtime's text log format, which prints the
    message only: the secret's ARN and the HTTP status, kept in ``extra``, never reach the log, and a
    misconfigured extension (wrong port, missing layer, refused token) shows as an anonymous warning."""
    arn = secretsmanager.create_secret(Name="athm-private-token", SecretString="sk_value")["ARN"]
    extension.fail_with = 401
    with caplog.at_level(logging.WARNING, logger="handler.secrets_manager"):
        assert secrets_manager.read(arn) == "sk_value"
    [warning] = [r for r in caplog.records if r.name == "handler.secrets_manager"]
    assert arn in warning.getMessage() and "HTTP 401" in warning.getMessage(), warning.getMessage()
    assert "sk_value" not in json.dumps(warning.__dict__, default=str)
