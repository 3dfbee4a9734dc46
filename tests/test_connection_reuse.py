"""Warm invocations reuse the container's one database connection.

Mangum over Django's stock ASGI handler would run each request on a fresh thread and so open a fresh
connection per invocation; the second test shows that, so the first one is known to be able to fail.
"""

import json

import pytest
from django.db.backends.signals import connection_created
from mangum import Mangum

from handler.local import LocalContext, http_api_event
from tests.conftest import SECRET, sample_data

INVOCATIONS = 40


@pytest.fixture
def new_connections():
    opened = []

    def record(sender, connection, **kwargs):
        opened.append(connection.alias)

    connection_created.connect(record)
    yield opened
    connection_created.disconnect(record)


def webhook_events(count: int) -> list[dict]:
    events = []
    for index in range(count):
        data = {**sample_data("payment_received"), "referenceNumber": f"warm-{index}"}
        events.append(http_api_event("POST", f"/webhook/{SECRET}", body=json.dumps(data)))
    return events


def test_many_warm_invocations_use_one_connection(lambda_handler, new_connections):
    lambda_handler.app.application.close_connections()
    for event in webhook_events(INVOCATIONS):
        assert lambda_handler(event)["statusCode"] == 200
        assert lambda_handler(http_api_event("GET", "/health"))["statusCode"] == 200
    assert len(new_connections) == 1


def test_the_stock_asgi_handler_opens_a_connection_per_invocation(
    transactional_db, new_connections, monkeypatch
):
    from django.core.handlers.asgi import ASGIHandler
    from django.db import connections

    import handler.app  # noqa: F401 - the same Django setup and URLconf

    # Each request's thread dies with its connection open; closing at request end keeps the test
    # database droppable, and a new connection per invocation is still what the stock handler does.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)

    stock = Mangum(ASGIHandler(), lifespan="off")
    for event in webhook_events(5):
        assert stock(event, LocalContext())["statusCode"] == 200
    assert len(new_connections) == 5
