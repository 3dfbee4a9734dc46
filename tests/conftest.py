"""Shared fixtures: the Lambda handler against the test database, signal recording, samples, and the
rule that PostgreSQL and MariaDB runs skip (with the reason) on a laptop without them, but fail in CI."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from athm_core import signals

ROOT = Path(__file__).parent.parent
SAMPLES = Path(__file__).parent / "samples"
SECRET = settings.ATHM_WEBHOOK_SECRET.split(",")[0]
# The signals of the contract (DESIGN.md, docs/receivers.md), written out here, apart from athm_core.events.
SIGNAL_NAMES = [
    "payment_completed",
    "payment_cancelled",
    "payment_expired",
    "refund_sent",
    "payment_received",
    "donation_received",
]
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    database = settings.DATABASES["default"]
    vendor = database["ENGINE"].rsplit(".", 1)[-1]
    if vendor == "sqlite3":
        return
    host = database.get("HOST") or "127.0.0.1"
    port = int(database.get("PORT") or _DEFAULT_PORTS[vendor])
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        reason = f"{vendor} at {host}:{port} is not reachable ({exc}); CI=1 makes this an error"
        if os.environ.get("CI"):
            raise pytest.UsageError(reason) from exc
        for item in items:
            item.add_marker(pytest.mark.skip(reason=reason))


def sample(name: str) -> str:
    """The text of a sample payload, e.g. ``sample("refund_sent.production")``."""
    return (SAMPLES / f"{name}.json").read_text(encoding="utf-8")


def sample_data(name: str) -> dict[str, Any]:
    return json.loads(sample(name))


class SignalLog:
    """Every athm_core signal sent while it is connected, with its sender, arguments and thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, type, dict[str, Any]]] = []
        self._receivers = {}
        for name in SIGNAL_NAMES:

            def receiver(sender, _name=name, **kwargs):
                kwargs.pop("signal", None)
                self.calls.append((_name, sender, kwargs))

            self._receivers[name] = receiver
            getattr(signals, name).connect(receiver, weak=False)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def disconnect(self) -> None:
        for name, receiver in self._receivers.items():
            getattr(signals, name).disconnect(receiver)


@pytest.fixture
def signal_log() -> Iterator[SignalLog]:
    log = SignalLog()
    yield log
    log.disconnect()


class Lambda:
    """Calls ``handler.app.lambda_handler`` the way API Gateway would."""

    def __init__(self) -> None:
        from handler import app

        self.app = app

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        from handler.local import invoke

        return invoke(self.app.lambda_handler, event)

    def post(
        self, body: str | bytes, *, secret: str = SECRET, rest: bool = False, **options: Any
    ) -> Response:
        from handler.local import http_api_event, rest_api_event

        build = rest_api_event if rest else http_api_event
        return Response(self(build("POST", f"/webhook/{secret}", body=body, **options)))

    def get(self, path: str, **options: Any) -> Response:
        from handler.local import http_api_event

        return Response(self(http_api_event("GET", path, **options)))


class Response:
    def __init__(self, raw: dict[str, Any]) -> None:
        from handler.local import response_body

        self.raw = raw
        self.status = raw["statusCode"]
        self.body = response_body(raw)
        self.headers = raw.get("headers") or {}

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:200]!r}>"


@pytest.fixture
def lambda_handler(transactional_db) -> Iterator[Lambda]:
    """The Lambda handler, its worker thread using the test database (committed, flushed after the test)."""
    handler = Lambda()
    yield handler
    # The worker thread's connection must not outlive the test database.
    handler.app.application.close_connections()


def database_url(name: str | None = None, *, host: str | None = None, port: int | None = None) -> str:
    """The test database's URL, for a child process; with ``name``, another database on the same server
    (a file of that path on SQLite); with ``host`` and ``port``, the same server reached elsewhere."""
    database = connection.settings_dict
    engine = database["ENGINE"].rsplit(".", 1)[-1]
    if engine == "sqlite3":
        return f"sqlite:///{name or database['NAME']}"
    scheme = {"postgresql": "postgres", "mysql": "mysql"}[engine]
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
    address = f"{host or database['HOST']}:{port or database['PORT']}"
    return f"{scheme}://{credentials}@{address}/{name or database['NAME']}"


@pytest.fixture
def child_env(transactional_db, tmp_path) -> dict[str, str]:
    """Environment for a child process that runs the handler against this test database."""
    url = database_url()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ATHM_", "DJANGO_", "AWS_", "POWERTOOLS_", "DB_"))
    }
    env.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="handler.settings",
        ATHM_WEBHOOK_SECRET=SECRET,
        POWERTOOLS_METRICS_DISABLED="true",
        PYTHONPATH=str(ROOT),
    )
    return env


class Child:
    """A process running ``tests.child``: one Lambda container, driven one request at a time."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w+", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=ROOT,
            text=True,
        )

    def _readline(self, timeout: float) -> str:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.process.kill()
            raise RuntimeError(f"the child process gave no answer; its log:\n{self.log()}")
        return line

    def wait_ready(self, timeout: float = 120) -> None:
        line = self._readline(timeout)
        assert line.strip() == "ready", line

    def send(self, body: str | bytes = "", *, path: str | None = None, method: str = "POST") -> None:
        if isinstance(body, bytes):
            body = body.decode()
        request = {"method": method, "path": path or f"/webhook/{SECRET}", "body": body}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()

    def receive(self, timeout: float = 120) -> dict[str, Any]:
        return json.loads(self._readline(timeout))

    def request(self, body: str | bytes = "", **options: Any) -> dict[str, Any]:
        self.send(body, **options)
        return self.receive()

    def send_relay(self, **options: Any) -> None:
        """Start one run of the outbox relay (``publisher.relay(**options)``); ``receive()`` its report."""
        self.process.stdin.write(json.dumps({"relay": options}) + "\n")
        self.process.stdin.flush()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8")

    def close(self) -> int:
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process.stdout.close()
        self._log.close()
        return code


@pytest.fixture
def start_child(child_env, tmp_path) -> Iterator[Callable[..., Child]]:
    """Start child processes running the handler; ``start_child(ENV_VAR=value)`` changes its environment."""
    started: list[Child] = []

    def start(**env_changes: str) -> Child:
        env = {**child_env, **env_changes}
        child = Child(env, tmp_path / f"child-{len(started)}.log")
        started.append(child)
        return child

    yield start
    for child in started:
        child.close()


# --- SNS and the outbox ----------------------------------------------------------------------------------

SCHEMA_PATH = ROOT / "docs" / "schemas" / "athm-event.v1.schema.json"


@dataclass
class Message:
    """One message as a subscribed SQS queue received it (raw message delivery)."""

    body: dict[str, Any]
    attributes: dict[str, str]
    text: str
    group_id: str | None = None


class Topic:
    """An SNS topic with an SQS queue subscribed to it (raw delivery, optional filter policy)."""

    def __init__(
        self,
        name: str = "athm-events",
        *,
        fifo: bool = False,
        filter_policy: dict[str, Any] | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        import boto3

        clients = {"region_name": "us-east-1", "endpoint_url": endpoint_url}
        self.sns = boto3.client("sns", **clients)
        self.sqs = boto3.client("sqs", **clients)
        suffix = ".fifo" if fifo else ""
        self.arn = self.sns.create_topic(
            Name=name + suffix, Attributes={"FifoTopic": "true"} if fifo else {}
        )["TopicArn"]
        queue = {"QueueName": f"{name}-queue{suffix}", "Attributes": {"FifoQueue": "true"} if fifo else {}}
        self.queue_url = self.sqs.create_queue(**queue)["QueueUrl"]
        self.subscribe_to(self.arn, filter_policy)

    def subscribe_to(self, topic_arn: str, filter_policy: dict[str, Any] | None = None) -> None:
        """Subscribe this topic's queue to ``topic_arn`` too."""
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        subscription = {"RawMessageDelivery": "true"}
        if filter_policy:
            subscription["FilterPolicy"] = json.dumps(filter_policy)
        self.sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=attributes["Attributes"]["QueueArn"],
            Attributes=subscription,
        )

    def messages(self) -> list[Message]:
        """Every message waiting in the queue, oldest first, deleted as they are read."""
        received: list[Message] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            if not batch:
                return received
            for entry in batch:
                received.append(
                    Message(
                        body=json.loads(entry["Body"]),
                        attributes={
                            key: value["StringValue"]
                            for key, value in entry.get("MessageAttributes", {}).items()
                        },
                        text=entry["Body"],
                        group_id=entry.get("Attributes", {}).get("MessageGroupId"),
                    )
                )
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=entry["ReceiptHandle"])


def use_topic(settings, arn: str) -> None:
    """Point the handler at ``arn`` (a fresh SNS client) with the outbox on."""
    from handler import publisher

    settings.ATHM_SNS_TOPIC_ARN = arn
    settings.ATHM_OUTBOX = True
    publisher.reset()


@pytest.fixture
def aws(monkeypatch) -> Iterator[None]:
    """moto's in-process AWS, for this test only."""
    from moto import mock_aws

    from handler import publisher

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SNS", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    from handler.observability import metrics

    with mock_aws():
        yield
    publisher.reset()
    metrics.clear_metrics()  # the relay's, which no Lambda invocation flushed


@pytest.fixture
def make_topic(aws, settings) -> Callable[..., Topic]:
    """``make_topic(fifo=..., filter_policy=...)``: a moto topic and queue, the handler publishing to it."""

    def make(**options: Any) -> Topic:
        topic = Topic(**options)
        use_topic(settings, topic.arn)
        return topic

    return make


@pytest.fixture(scope="session")
def event_schema() -> Any:
    """A validator for the published message body, from the schema file consumers are given."""
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def start_moto() -> tuple[Any, dict[str, str]]:
    """moto's server started on 127.0.0.1 (``.stop()`` it), and the AWS settings that point at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return server, env


@pytest.fixture
def moto_server(monkeypatch) -> Iterator[dict[str, str]]:
    """moto as a real endpoint on 127.0.0.1, for this process and its children: yields their AWS settings."""
    from handler import publisher

    server, env = start_moto()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    publisher.reset()
    yield env
    server.stop()
    publisher.reset()


# --- CloudFormation templates ----------------------------------------------------------------------------


def load_template(path: Path) -> dict[str, Any]:
    """A CloudFormation/SAM template, its short tags read as the long form (``!Ref X`` -> {"Ref": "X"})."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}

    Loader.add_multi_constructor("!", short_tag)
    return yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)


def cfn_lint(path: Path) -> subprocess.CompletedProcess:
    """cfn-lint on ``path``, run by the interpreter running the tests (cfn-lint has no ``__main__``)."""
    command = "import sys; from cfnlint.runner import main; sys.argv[0] = 'cfn-lint'; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", command, str(path)], capture_output=True, text=True, timeout=300
    )
