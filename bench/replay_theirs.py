"""The peer's side of the benchmark: django-athm's webhook view, ``POST /athm/webhook/``.

A warm replay posts each delivery through Django's test client, in one process. A cold start loads the
project's WSGI application, as gunicorn would, and calls it with one request. Run by ``bench/run.py`` in
django-athm's own virtual environment; see ``bench/harness.py`` for the options.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

from bench import harness

PATH = "/athm/webhook/"


def configure(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.peer.settings"


def start(cold: bool) -> tuple[Callable[[str], Any], Callable[[Any], int]]:
    if cold:
        return _wsgi()
    from django.test import Client

    client = Client(REMOTE_ADDR="203.0.113.7")

    def send(body: str) -> int:
        return client.post(PATH, data=body, content_type="application/json").status_code

    return (lambda body: body), send


def _wsgi() -> tuple[Callable[[str], Any], Callable[[Any], int]]:
    from wsgiref.util import setup_testing_defaults

    from bench.peer.wsgi import application

    def prepare(body: str) -> dict[str, Any]:
        data = body.encode()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": PATH,
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(data)),
            "REMOTE_ADDR": "203.0.113.7",
            "wsgi.input": io.BytesIO(data),
        }
        setup_testing_defaults(environ)
        return environ

    def send(environ: dict[str, Any]) -> int:
        statuses = []
        response = application(environ, lambda status, headers, exc_info=None: statuses.append(status))
        try:
            b"".join(response)
        finally:
            response.close()
        return int(statuses[0].split()[0])

    return prepare, send


def count_rows() -> dict[str, Any]:
    from django_athm.models import Payment, Refund

    return harness.count_rows(Payment, Refund, completed=Payment.Status.COMPLETED)


SIDE = harness.Side(
    name="django-athm",
    configure=configure,
    start=start,
    signals_module="django_athm.signals",
    count_rows=count_rows,
)

if __name__ == "__main__":
    harness.main(SIDE)
