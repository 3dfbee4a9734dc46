"""Shared fixtures: the Lambda handler against the test database, signal recording, samples, and the
rule that PostgreSQL and MariaDB runs skip (with the reason) on a laptop without them, but fail in CI."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from athm_core import signals

SAMPLES = Path(__file__).parent / "samples"
SECRET = settings.ATHM_WEBHOOK_SECRETS[0]
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


@pytest.fixture
def child_env(transactional_db, tmp_path) -> dict[str, str]:
    """Environment for a child process that runs the handler against this test database."""
    database = connection.settings_dict
    engine = database["ENGINE"].rsplit(".", 1)[-1]
    if engine == "sqlite3":
        url = f"sqlite:///{database['NAME']}"
    else:
        scheme = {"postgresql": "postgres", "mysql": "mysql"}[engine]
        credentials = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
        url = f"{scheme}://{credentials}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
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
        PYTHONPATH=str(Path(__file__).parent.parent),
    )
    return env
