"""In Lambda, the webhook's SNS publish runs after its answer, inside the invocation (handler.after_answer),
against a stand-in for Lambda's Extensions API on 127.0.0.1 (tests/lambda_api.py)."""

import json
import subprocess
import sys
import threading
import uuid

import pytest

from athm_core.models import OutboxMessage
from handler import after_answer, publisher
from handler.local import LocalContext, http_api_event
from tests.conftest import ROOT, SECRET, Response, sample_data
from tests.lambda_api import ExtensionsApi


def body(name: str, **changes) -> str:
    return json.dumps({**sample_data(name), **changes})


def post(lambda_handler, text: str, request_id: str, *, seconds: float = 30.0) -> Response:
    """One invocation, as Lambda makes it: the context's request id is the INVOKE event's."""
    event = http_api_event("POST", f"/webhook/{SECRET}", body=text)
    context = LocalContext(aws_request_id=request_id, timeout_seconds=seconds)
    return Response(lambda_handler.app.lambda_handler(event, context))


@pytest.fixture
def extensions_api(monkeypatch, lambda_handler):
    """The webhook function registered with a stand-in Extensions API, as in an on-demand container."""
    api = ExtensionsApi()
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", api.address)
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
    app = lambda_handler.app
    assert after_answer.register(app.application.submit_on_worker, then=app._write_metrics)
    assert api.released(1)  # registered, and waiting for its first event
    yield api
    after_answer.stop()
    api.stop()


@pytest.fixture
def held(monkeypatch):
    """Holds each publish after a commit until the test opens the gate; records the thread it ran on."""
    gate = threading.Event()
    threads: list[str] = []
    real = publisher._publish_groups

    def publish_groups(groups, deadline):
        threads.append(threading.current_thread().name)
        gate.wait(10)
        real(groups, deadline)

    monkeypatch.setattr(publisher, "_publish_groups", publish_groups)
    yield gate, threads
    gate.set()


def test_the_answer_comes_before_the_publish_and_the_invocation_ends_after_it(
    extensions_api, lambda_handler, make_topic, held, capfd
):
    topic = make_topic()
    gate, threads = held
    request_id = extensions_api.invoke()
    response = post(lambda_handler, body("payment_received"), request_id)

    # Answered, with the message committed and not yet published, and Lambda told to wait.
    assert response.status == 200 and response.json()["outcome"] == "applied"
    row = OutboxMessage.objects.get()
    assert row.published_at is None
    assert not extensions_api.released(2, timeout=0.3)
    assert '"OutboxPublished"' not in capfd.readouterr().out

    gate.set()
    assert extensions_api.released(2)  # the invocation ends once the message is out
    row.refresh_from_db()
    assert row.published_at and row.attempts == 1
    [message] = topic.messages()
    assert message.body["id"] == str(row.event_id)
    # On the worker thread, whose database connection every invocation reuses; its metrics are written.
    assert threads == ["django_0"]
    assert '"OutboxPublished":[1.0]' in capfd.readouterr().out


def test_each_invocation_publishes_its_own_messages_before_the_next_one(
    extensions_api, lambda_handler, make_topic
):
    topic = make_topic()
    for calls, name in enumerate(["ecommerce_completed.production", "payment_received", "donation_received"]):
        response = post(lambda_handler, body(name), extensions_api.invoke())
        assert response.status == 200
        assert extensions_api.released(calls + 2)
    assert OutboxMessage.objects.filter(published_at=None).count() == 0
    assert len(topic.messages()) == 3


def test_work_that_overruns_the_invocation_is_left_to_the_relay_and_the_invocation_ends(
    extensions_api, lambda_handler, make_topic, held, caplog
):
    topic = make_topic()
    gate, _ = held
    # 1.5 s left: the extension gives up one second before the deadline, with the publish still held.
    response = post(lambda_handler, body("payment_received"), extensions_api.invoke(seconds=1.5), seconds=1.5)
    assert response.status == 200
    assert extensions_api.released(2, timeout=3)
    assert any("overran the invocation" in message for message in caplog.messages)
    assert OutboxMessage.objects.get().published_at is None

    # The held publish, let go past its deadline, publishes nothing; the relay does.
    gate.set()
    publisher_done = threading.Event()
    lambda_handler.app.application.submit_on_worker(publisher_done.set)
    assert publisher_done.wait(10)
    assert OutboxMessage.objects.get().published_at is None
    assert publisher.relay(retry_now=True).published == 1
    assert len(topic.messages()) == 1


def test_failing_work_is_logged_and_the_invocation_still_ends(
    extensions_api, lambda_handler, make_topic, monkeypatch, caplog
):
    make_topic()

    def broken(groups, deadline):
        raise RuntimeError("the outbox could not be read")

    monkeypatch.setattr(publisher, "_publish_groups", broken)
    response = post(lambda_handler, body("payment_received"), extensions_api.invoke())
    assert response.status == 200
    assert extensions_api.released(2)
    assert "work after the answer failed" in caplog.messages
    assert OutboxMessage.objects.get().published_at is None  # pending, for the relay


def test_an_invocation_with_nothing_to_do_after_its_answer_ends_at_once(extensions_api, lambda_handler):
    context = LocalContext(aws_request_id=extensions_api.invoke())
    answer = lambda_handler.app.lambda_handler({"source": "aws.events"}, context)
    assert answer["ok"] is True
    assert extensions_api.released(2)


def test_without_the_extension_the_publish_comes_before_the_answer(lambda_handler, make_topic, monkeypatch):
    api = ExtensionsApi(refuse=True)  # as Lambda answers a registration after init
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", api.address)
    try:
        assert not after_answer.register(lambda_handler.app.application.submit_on_worker)
        assert not after_answer.active()
        topic = make_topic()
        response = post(lambda_handler, body("payment_received"), str(uuid.uuid4()))
        assert response.status == 200
        assert OutboxMessage.objects.get().published_at is not None  # published when the answer came
        assert len(topic.messages()) == 1
    finally:
        api.stop()


@pytest.mark.parametrize(
    "environment",
    [{}, {"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"}],
    ids=["outside-lambda", "snapstart"],
)
def test_outside_lambda_and_under_snapstart_nothing_registers(monkeypatch, lambda_handler, environment):
    api = ExtensionsApi()
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    if environment:
        monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", api.address)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    try:
        assert not after_answer.register(lambda_handler.app.application.submit_on_worker)
        assert api.registered == []
    finally:
        api.stop()


COLD_START = """
import json, os, sys, time
import handler.app as app
from django.db import connections
from athm_core.models import OutboxMessage
from handler.local import LocalContext, http_api_event

at_init = {"boto3": "boto3" in sys.modules, "sns_client": app.sns_client.cache_info().currsize}
event = http_api_event("POST", "/webhook/" + os.environ["ATHM_WEBHOOK_SECRET"], body=os.environ["BODY"])
answer = app.lambda_handler(event, LocalContext(aws_request_id=os.environ["REQUEST_ID"]))
at_answer = {"boto3": "boto3" in sys.modules}
for _ in range(200):  # the publish, after the answer
    if not OutboxMessage.objects.filter(published_at=None).exists():
        break
    time.sleep(0.05)
connections.close_all()
print(json.dumps({"init": at_init, "answer": at_answer, "status": answer["statusCode"],
                  "pending": OutboxMessage.objects.filter(published_at=None).count()}))
"""


def test_an_on_demand_cold_start_answers_before_it_loads_boto3_and_then_publishes(
    child_env, moto_server, settings
):
    from tests.conftest import Topic

    topic = Topic(endpoint_url=moto_server["AWS_ENDPOINT_URL"])
    api = ExtensionsApi()
    try:
        env = {
            **child_env,
            **moto_server,
            "ATHM_SNS_TOPIC_ARN": topic.arn,
            "AWS_LAMBDA_RUNTIME_API": api.address,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "REQUEST_ID": api.invoke(),
            "BODY": body("payment_received"),
        }
        result = subprocess.run(
            [sys.executable, "-c", COLD_START], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["init"] == {"boto3": False, "sns_client": 0}
        assert report["status"] == 200 and report["answer"] == {"boto3": False}
        assert report["pending"] == 0
        assert [extension["events"] for extension in api.registered] == [["INVOKE"]]
        assert api.released(2)
        assert len(topic.messages()) == 1
    finally:
        api.stop()
