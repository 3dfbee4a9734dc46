"""The AWS edge, event shape by event shape: paths that carry more than the route (a named stage, a custom
domain's base path), invocations that are not HTTP requests, a JSON answer for every request the function
cannot read (with nothing written), and no webhook secret or customer data in any log, whatever the
environment says.

Requests go through ``handler.app.lambda_handler`` as API Gateway sends them (HTTP API payload 2.0 and REST
payload 1.0); the environment's own switches are tried in a separate process, as a Lambda container reads
them at its cold start.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import threading
import uuid
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.urls import path

from athm_core.models import Payment, Refund, WebhookEvent
from handler import urls as handler_urls
from handler.local import http_api_event, make_server, rest_api_event
from tests.conftest import SECRET, Response, sample

WRONG_SECRET = "not-the-secret-" + "0" * 24
BODY = sample("payment_received")
EMAIL = "ana@example.com"  # the customer's, in BODY


def event(api: str, method: str, route: str, *, stage: str | None = None, **options: Any) -> dict[str, Any]:
    """An API Gateway event; ``stage`` sets ``requestContext.stage`` (the path is sent as given)."""
    build = rest_api_event if api == "rest" else http_api_event
    built = build(method, route, **options)
    if stage is not None:
        built["requestContext"]["stage"] = stage
    return built


def webhook_event(api: str, route: str = f"/webhook/{SECRET}", **options: Any) -> dict[str, Any]:
    return event(api, "POST", route, body=BODY, **options)


def without_header(built: dict[str, Any], name: str) -> dict[str, Any]:
    for field in ("headers", "multiValueHeaders"):
        for key in [key for key in built.get(field) or {} if key.lower() == name]:
            del built[field][key]
    return built


def with_header(built: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    without_header(built, name.lower())
    built["headers"][name] = value
    if "multiValueHeaders" in built:
        built["multiValueHeaders"][name] = [value]
    return built


def nothing_written() -> bool:
    return WebhookEvent.objects.count() == Payment.objects.count() == Refund.objects.count() == 0


def metrics_emitted(capsys) -> list[str]:
    """The metric names Powertools flushed (CloudWatch EMF lines on stdout) since the last call."""
    names = []
    for line in capsys.readouterr().out.splitlines():
        if line.startswith('{"_aws"'):
            for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                names += [metric["Name"] for metric in directive["Metrics"]]
    return names


def assert_accepted(response: Response, request_id: str) -> None:
    assert response.status == 200, response
    assert response.json()["accepted"] is True
    assert WebhookEvent.objects.filter(request_id=request_id).count() == 1


def assert_json_error(response: Response, status: int, error: str) -> dict[str, Any]:
    """The answer is ``status`` with views._error's JSON shape: ``{"error": ..., "detail": ...}``."""
    assert response.status == status, response
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    answer = response.json()
    assert answer["error"] == error and isinstance(answer["detail"], str) and answer["detail"], answer
    return answer


# --- 4. Paths that carry more than the route -------------------------------------------------------------

API_SHAPES = pytest.mark.parametrize("api", ["http", "rest"])


@pytest.mark.parametrize(
    ("api", "route", "stage"),
    [
        # The execute-api URL of a named stage: HTTP API puts the stage in rawPath and http.path.
        ("http", f"/prod/webhook/{SECRET}", "prod"),
        # The same stage behind a custom domain: no stage in the path.
        ("http", f"/webhook/{SECRET}", "prod"),
        ("http", f"/webhook/{SECRET}", "$default"),
        # REST's execute-api URL: the stage is in requestContext.path only.
        ("rest", f"/webhook/{SECRET}", "prod"),
        # REST behind a custom domain mapped without a stage: the stage is in `path` too.
        ("rest", f"/prod/webhook/{SECRET}", "prod"),
        # API Gateway's console test.
        ("rest", f"/webhook/{SECRET}", "test-invoke-stage"),
        # Only a whole first segment is a stage: "web" is not taken off /webhook/...
        ("http", f"/webhook/{SECRET}", "web"),
        ("rest", f"/webhook/{SECRET}", "web"),
    ],
    ids=lambda value: value.replace(SECRET, "SECRET") if isinstance(value, str) else value,
)
def test_a_named_stage_is_handled_without_configuration(lambda_handler, api, route, stage):
    request_id = uuid.uuid4().hex
    response = Response(lambda_handler(webhook_event(api, route, stage=stage, request_id=request_id)))
    assert_accepted(response, request_id)


@pytest.fixture
def base_path(monkeypatch) -> str:
    """The custom domain's base path (ATHM_API_GATEWAY_BASE_PATH, read at the cold start) set to /athm."""
    from handler import app

    monkeypatch.setitem(app._adapter.config, "api_gateway_base_path", "/athm")
    return "/athm"


@pytest.mark.parametrize(
    ("api", "route", "stage"),
    [
        ("http", f"/athm/webhook/{SECRET}", "$default"),
        ("http", f"/athm/webhook/{SECRET}", "prod"),
        # REST behind a base path mapped to a stage, and behind one mapped without a stage.
        ("rest", f"/athm/webhook/{SECRET}", "prod"),
        ("rest", f"/athm/prod/webhook/{SECRET}", "prod"),
        # The execute-api URL still works with a base path configured.
        ("http", f"/prod/webhook/{SECRET}", "prod"),
        ("rest", f"/webhook/{SECRET}", "prod"),
    ],
    ids=lambda value: value.replace(SECRET, "SECRET") if isinstance(value, str) else value,
)
def test_a_custom_domains_base_path_is_taken_off_by_the_setting(lambda_handler, base_path, api, route, stage):
    request_id = uuid.uuid4().hex
    response = Response(lambda_handler(webhook_event(api, route, stage=stage, request_id=request_id)))
    assert_accepted(response, request_id)


@API_SHAPES
@pytest.mark.parametrize(
    ("route", "stage", "configured"),
    [
        (f"/prod/webhook/{WRONG_SECRET}", "prod", False),
        (f"/prod/webhook/{SECRET[:-1]}", "prod", False),
        # One stage is taken off, never two.
        (f"/prod/prod/webhook/{SECRET}", "prod", False),
        (f"/prod/{SECRET}", "prod", False),
        (f"/athm/webhook/{WRONG_SECRET}", "prod", True),
        # Without the setting, a base path is part of the path.
        (f"/athm/webhook/{SECRET}", "prod", False),
    ],
    ids=lambda value: value.replace(SECRET, "SECRET") if isinstance(value, str) else value,
)
def test_a_wrong_secret_under_a_stage_or_base_path_is_404_and_writes_nothing(
    lambda_handler, request, api, route, stage, configured
):
    if configured:
        request.getfixturevalue("base_path")
    response = Response(lambda_handler(webhook_event(api, route, stage=stage)))
    assert_json_error(response, 404, "not_found")
    assert nothing_written()


def test_the_base_path_setting_comes_from_the_environment(start_child):
    # Written carelessly on purpose: no leading slash, a trailing one.
    child = start_child(ATHM_API_GATEWAY_BASE_PATH="athm/")
    child.wait_ready()
    assert child.request(BODY, path=f"/athm/webhook/{SECRET}")["status"] == 200
    assert child.request(BODY, path=f"/webhook/{SECRET}")["answer"]["duplicate"] is True
    assert child.request(BODY, path=f"/athm/webhook/{WRONG_SECRET}")["status"] == 404
    assert child.request(path="/athm/health", method="GET")["status"] == 200
    assert child.close() == 0
    assert WebhookEvent.objects.count() == 2 and Payment.objects.count() == 1


# --- 5. Invocations that are not HTTP requests -----------------------------------------------------------

NOT_HTTP = {
    "EventBridge schedule": {
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-22T14:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/athm-keep-warm"],
        "detail": {},
    },
    "serverless-plugin-warmup": {"source": "serverless-plugin-warmup"},
    "the console's empty test event": {},
    "the console's hello-world template": {"key1": "value1", "key2": "value2", "key3": "value3"},
    "an SQS batch": {"Records": [{"messageId": "1", "eventSource": "aws:sqs", "body": "{}"}]},
    "no records": {"Records": []},
    "records that are not a list": {"Records": 7},
    "a null request context": {"requestContext": None},
    "a list": [],
    "a string": "ping",
    "null": None,
}


@pytest.mark.parametrize("invocation", list(NOT_HTTP.values()), ids=list(NOT_HTTP))
def test_an_invocation_that_is_not_an_http_request_is_answered_harmlessly(
    lambda_handler, capsys, caplog, invocation
):
    from django.db.backends.signals import connection_created

    from handler.observability import logger

    lambda_handler.app.application.close_connections()
    opened = []

    def record(sender, connection, **kwargs):
        opened.append(connection.alias)

    caplog.set_level(logging.DEBUG, logger=logger.name)
    metrics_emitted(capsys)
    connection_created.connect(record)
    try:
        answer = lambda_handler(invocation)
    finally:
        connection_created.disconnect(record)
    assert isinstance(answer, dict) and "statusCode" not in answer, answer
    assert json.dumps(answer)  # a small JSON document for whoever invoked it
    assert metrics_emitted(capsys).count("NonHttpInvocation") == 1
    debug = [entry for entry in caplog.records if entry.levelno == logging.DEBUG]
    assert any("not an HTTP request" in entry.getMessage() for entry in debug), caplog.records
    assert not [entry for entry in caplog.records if entry.levelno >= logging.WARNING]
    assert opened == [] and nothing_written()


def test_http_requests_still_reach_django_after_a_ping(lambda_handler):
    lambda_handler(NOT_HTTP["EventBridge schedule"])
    request_id = uuid.uuid4().hex
    assert_accepted(Response(lambda_handler(webhook_event("http", request_id=request_id))), request_id)


# --- 8. The error contract at the edges ------------------------------------------------------------------


def base64_body(api: str, text: Any) -> dict[str, Any]:
    built = webhook_event(api)
    built["body"] = text
    built["isBase64Encoded"] = True
    return built


def without_content_length(built: dict[str, Any]) -> dict[str, Any]:
    return without_header(built, "content-length")


def broken(api: str, change: str) -> dict[str, Any]:
    """A webhook event (a valid body, the right secret) with one part of the event broken."""
    built = webhook_event(api)
    if change == "no http context":
        built["requestContext"].pop("http" if api == "http" else "identity")
        built.pop("httpMethod", None)
    elif change == "null headers":
        built["headers"] = None
    elif change == "a lone surrogate in a header value":
        with_header(built, "User-Agent", "curl\udcff")
    elif change == "a lone surrogate in a header name":
        with_header(built, "X-\udcff", "1")
    elif change == "a header value that is not text":
        with_header(built, "X-Count", 7)
    elif change == "a lone surrogate in the query string":
        if api == "http":
            built["rawQueryString"] = "a=\udcff"
        else:
            built["queryStringParameters"] = {"a": "\udcff"}
            built["multiValueQueryStringParameters"] = {"a": ["\udcff"]}
    elif change == "a null query string":
        built["rawQueryString"] = None
    elif change == "query parameters that are a list":
        built["queryStringParameters"] = ["a", "b", "c"]
        built["multiValueQueryStringParameters"] = None
    elif change == "a body that is a number":
        built["body"] = 42
    elif change == "a body that is an object":
        built["body"] = {"total": "8.00"}
    else:
        raise AssertionError(change)
    return built


UNREADABLE = {
    "http": [
        "no http context",
        "null headers",
        "a lone surrogate in a header value",
        "a lone surrogate in a header name",
        "a header value that is not text",
        "a lone surrogate in the query string",
        "a null query string",
        "a body that is a number",
        "a body that is an object",
    ],
    "rest": [
        "no http context",
        "a lone surrogate in a header value",
        "a lone surrogate in a header name",
        "a header value that is not text",
        "a lone surrogate in the query string",
        "query parameters that are a list",
        "a body that is a number",
        "a body that is an object",
    ],
}


@pytest.mark.parametrize(
    ("api", "change"), [(api, change) for api, changes in UNREADABLE.items() for change in changes]
)
def test_an_event_that_cannot_be_read_as_a_request_is_400_and_writes_nothing(lambda_handler, api, change):
    assert_json_error(Response(lambda_handler(broken(api, change))), 400, "bad_request")
    assert nothing_written()


@API_SHAPES
@pytest.mark.parametrize("value", ["abc", "-1", "+5", "1e3", "10, 20", "١٢", "", "0x10", "  "])
def test_a_content_length_that_is_not_a_number_of_bytes_is_400_and_writes_nothing(lambda_handler, api, value):
    if not value.strip():
        # A blank header, as a proxy may leave it, is no declaration at all.
        request_id = uuid.uuid4().hex
        built = with_header(webhook_event(api, request_id=request_id), "Content-Length", value)
        assert_accepted(Response(lambda_handler(built)), request_id)
        return
    built = with_header(webhook_event(api), "Content-Length", value)
    answer = assert_json_error(Response(lambda_handler(built)), 400, "bad_request")
    assert "Content-Length" in answer["detail"]
    assert nothing_written()


@API_SHAPES
@pytest.mark.parametrize("encode_base64", [False, True], ids=["text", "base64"])
def test_a_body_over_djangos_ceiling_without_a_content_length_is_the_json_413(
    lambda_handler, capsys, api, encode_base64
):
    body = json.dumps({**json.loads(BODY), "message": "m" * 3_000_000})  # over 2.5 MB, under Lambda's 6 MB
    built = without_content_length(event(api, "POST", f"/webhook/{SECRET}", body=body))
    if encode_base64:
        built["body"] = base64.b64encode(body.encode()).decode("ascii")
        built["isBase64Encoded"] = True
    metrics_emitted(capsys)
    answer = assert_json_error(Response(lambda_handler(built)), 413, "payload_too_large")
    assert answer["detail"] == f"the body is {len(body.encode())} bytes; the limit is 65536"
    assert "WebhookTooLarge" in metrics_emitted(capsys)
    assert nothing_written()


@API_SHAPES
@pytest.mark.parametrize("host", ["localhost:abc", "localhost:1:2", "[::1", "local host", "localhost:-1"])
def test_a_host_that_is_not_a_host_is_400_and_writes_nothing(lambda_handler, api, host):
    built = with_header(webhook_event(api), "Host", host)
    assert_json_error(Response(lambda_handler(built)), 400, "bad_request")
    assert nothing_written()


@API_SHAPES
def test_a_host_outside_allowed_hosts_is_400_and_writes_nothing(lambda_handler, settings, api):
    settings.ALLOWED_HOSTS = ["pay.example.com"]
    built = with_header(webhook_event(api), "Host", "attacker.example.net")
    assert_json_error(Response(lambda_handler(built)), 400, "bad_request")
    assert nothing_written()
    request_id = uuid.uuid4().hex
    allowed = with_header(webhook_event(api, request_id=request_id), "Host", "pay.example.com")
    assert_accepted(Response(lambda_handler(allowed)), request_id)


@API_SHAPES
@pytest.mark.parametrize(
    "text",
    [
        "not base64!",
        "café",
        BODY,  # JSON, marked as base64
        base64.b64encode(BODY.encode()).decode()[:-2],  # cut short: wrong padding
        base64.b64encode(BODY.encode()).decode() + "\n!",
    ],
    ids=["punctuation", "not ASCII", "JSON", "truncated", "trailing garbage"],
)
def test_a_body_marked_base64_that_is_not_is_400_and_writes_nothing(lambda_handler, api, text):
    answer = assert_json_error(Response(lambda_handler(base64_body(api, text))), 400, "bad_request")
    assert "base64" in answer["detail"]
    assert nothing_written()


@API_SHAPES
@pytest.mark.parametrize("body", ["missing", None, ""])
def test_no_body_with_the_base64_flag_is_an_empty_body(lambda_handler, api, body):
    # No body is an empty one, whatever the flag says: the view's answer to an empty body, not a crash.
    built = base64_body(api, body)
    if body == "missing":
        del built["body"]
    answer = assert_json_error(Response(lambda_handler(built)), 400, "invalid_payload")
    assert answer["detail"].startswith("body:")
    assert Payment.objects.count() == Refund.objects.count() == 0


@API_SHAPES
def test_query_strings_the_webhook_ignores_do_not_matter(lambda_handler, api):
    request_id = uuid.uuid4().hex
    built = webhook_event(api, request_id=request_id)
    if api == "http":
        built["rawQueryString"] = "a=%ZZ&b=%ff&c"
    else:
        built["queryStringParameters"] = {"a": "%ZZ", "b": "ÿ"}
        built["multiValueQueryStringParameters"] = {"a": ["%ZZ"], "b": ["ÿ"]}
    assert_accepted(Response(lambda_handler(built)), request_id)


@API_SHAPES
def test_a_path_that_is_not_text_is_a_wrong_secret(lambda_handler, api):
    built = webhook_event(api, "/webhook/\udcff")
    assert_json_error(Response(lambda_handler(built)), 404, "not_found")
    assert nothing_written()


# This module is also a URLconf: views that raise what Django itself turns into answers, the handler's own
# routes, and the handler's error views (Django's defaults where it has none).
handler400, handler403, handler404, handler500 = (
    getattr(handler_urls, f"handler{status}", None) for status in (400, 403, 404, 500)
)


def _raise(exception: Exception):
    def view(request):
        raise exception

    return view


urlpatterns = [
    path("suspicious", _raise(SuspiciousOperation("the request looks forged"))),
    path("too-big", _raise(RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE."))),
    path("forbidden", _raise(PermissionDenied())),
    path("bug", _raise(ZeroDivisionError())),
    path("bug-quoting-a-customer", _raise(ValueError("no order for Luis Ortiz 7875550102"))),
    *handler_urls.urlpatterns,
]


@pytest.mark.parametrize(
    ("route", "status", "error"),
    [
        ("/suspicious", 400, "bad_request"),
        ("/too-big", 413, "payload_too_large"),
        ("/forbidden", 403, "forbidden"),
        ("/bug", 500, "internal_error"),
        ("/nowhere", 404, "not_found"),
    ],
)
def test_the_errors_django_answers_are_json_too(lambda_handler, settings, route, status, error):
    settings.ROOT_URLCONF = __name__
    assert_json_error(Response(lambda_handler(event("http", "GET", route))), status, error)


def test_a_view_s_bug_is_logged_by_its_type_and_place_never_its_message(lambda_handler, settings, caplog):
    """Django's own request log is off (the path holds the webhook secret), so the 500 view says what
    failed and where: the exception's type and the line that raised it, without its text (customer data)."""
    settings.ROOT_URLCONF = __name__
    response = Response(lambda_handler(event("http", "GET", "/bug-quoting-a-customer")))
    assert_json_error(response, 500, "internal_error")
    (record,) = [record for record in caplog.records if record.levelname == "ERROR"]
    assert record.error_type == "ValueError" and "test_edges.py" in record.at and record.at.endswith("view")
    logged = str(record.__dict__)
    assert "Luis" not in logged and "7875550102" not in logged


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_health_check_answers_get_and_head(lambda_handler, method):
    """Uptime checkers that send HEAD see the same status as GET (it was 405)."""
    assert Response(lambda_handler(event("http", method, "/health"))).status == 200


def test_the_health_check_is_json_with_the_admin_s_csrf_check_on(settings):
    """With the admin on (its CsrfViewMiddleware runs for every view), a POST to /health is the JSON 405,
    not Django's HTML CSRF page."""
    from django.test import Client

    settings.MIDDLEWARE = ["django.middleware.csrf.CsrfViewMiddleware"]
    response = Client(enforce_csrf_checks=True).post("/health")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


def test_a_failure_outside_djangos_request_handling_is_the_json_500(lambda_handler, monkeypatch):
    from handler import asgi

    def broken_request(*args, **kwargs):
        raise RuntimeError("the adapter failed")

    monkeypatch.setattr(asgi, "ASGIRequest", broken_request)
    assert_json_error(Response(lambda_handler(webhook_event("http"))), 500, "internal_error")
    assert nothing_written()


# --- 9. Secrets and customer data in logs ----------------------------------------------------------------


def test_the_event_is_never_logged_whatever_powertools_is_told(start_child):
    child = start_child(
        POWERTOOLS_LOGGER_LOG_EVENT="true",
        POWERTOOLS_LOG_LEVEL="DEBUG",
        CHILD_ROOT_LOG_LEVEL="DEBUG",
    )
    child.wait_ready()
    assert child.request(BODY)["status"] == 200
    assert child.request(BODY, path=f"/WEBHOOK/{SECRET}")["status"] == 404
    assert child.request(BODY, path=f"/prod/webhook/{SECRET}x")["status"] == 404
    assert child.close() == 0
    log = child.log()
    assert "webhook event processed" in log  # the logs are there, at DEBUG
    for value in (SECRET, EMAIL, "Ana Colón", "Ana Col\\u00f3n", "7875550103"):
        assert value not in log, f"{value!r} in the log"


LOCAL_SECRET = "s3cr3t-local-9f2c4e7a1b3d5f6081a2"


@pytest.fixture
def local_server():
    """``athm serve``'s HTTP server in this process, in front of a stand-in Lambda handler."""
    seen = []

    def stand_in(event, context):
        seen.append(event)
        return {"statusCode": 404, "headers": {"content-type": "application/json"}, "body": "{}"}

    server = make_server(stand_in, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.mark.parametrize(
    "route",
    [
        f"/webhook/{LOCAL_SECRET}",
        f"/WEBHOOK/{LOCAL_SECRET}",
        f"/Webhook/{LOCAL_SECRET}",
        f"/webhook//{LOCAL_SECRET}",
        f"//webhook/{LOCAL_SECRET}",
        f"/%77ebhook/{LOCAL_SECRET}",
        f"/webhook%2F{LOCAL_SECRET}",
        f"/webhook/{LOCAL_SECRET}/",
        f"/webhook/{LOCAL_SECRET}?a=1",
        f"/webhook?{LOCAL_SECRET}",
        f"/prod/webhook/{LOCAL_SECRET}",
        f"/{LOCAL_SECRET}",
        f"/webhook/{LOCAL_SECRET.upper()}",
        f"/webhook/{LOCAL_SECRET[:20]}",
    ],
    ids=lambda value: value.replace(LOCAL_SECRET.upper(), "SECRET-UPPER").replace(LOCAL_SECRET, "SECRET"),
)
def test_athm_serve_never_prints_the_path_after_its_route(local_server, capsys, route):
    port, seen = local_server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", route, body=BODY, headers={"Content-Type": "application/json"})
    assert connection.getresponse().status == 404
    connection.close()
    assert len(seen) == 1  # the request did reach the handler
    printed = capsys.readouterr()
    output = (printed.out + printed.err).lower()
    assert "post" in output  # the request is logged
    assert LOCAL_SECRET[:20].lower() not in output, output
    assert EMAIL not in output


@pytest.mark.parametrize(
    "request_line",
    [
        f"POST /WEBHOOK/{LOCAL_SECRET} extra HTTP/1.1",  # bad syntax: the line is quoted in the error
        f"POST /webhook/{LOCAL_SECRET} HTTP/9.9",
        f"POST /webhook/{LOCAL_SECRET}",  # HTTP/0.9 style, without a version
        f"BREW /Webhook/{LOCAL_SECRET} HTTP/1.1",
    ],
    ids=["four words", "unknown version", "no version", "unknown method"],
)
def test_athm_serve_never_prints_a_malformed_request_line(local_server, capsys, request_line):
    port, _ = local_server
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(request_line.encode() + b"\r\nHost: localhost\r\n\r\n")
        client.recv(65536)
    printed = capsys.readouterr()
    output = (printed.out + printed.err).lower()
    assert output.strip()  # the refusal is logged
    assert LOCAL_SECRET[:20].lower() not in output, output


def test_athm_serve_refuses_a_content_length_it_cannot_frame_as_api_gateway_would(local_server, capsys):
    port, seen = local_server
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        request = f"POST /webhook/{LOCAL_SECRET} HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n"
        client.sendall(request.encode())
        status_line = client.recv(65536).split(b"\r\n", 1)[0]
    assert status_line.split()[1] == b"400", status_line
    assert seen == []
    printed = capsys.readouterr()
    output = (printed.out + printed.err).lower()
    assert "400" in output and "traceback" not in output, output
    assert LOCAL_SECRET[:20].lower() not in output, output


@pytest.mark.parametrize(
    "invocation",
    [
        {"requestContext": {"elb": {}}},
        {"requestContext": {"elb": {"targetGroupArn": "arn"}}, "httpMethod": "POST", "path": "/webhook/x"},
        {
            "requestContext": {"elb": {}},
            "httpMethod": "POST",
            "path": "/health",
            "headers": {"host": "localhost:abc"},
            "body": "",
        },
    ],
    ids=["no request", "no headers", "a bad Host"],
)
def test_a_load_balancer_event_that_cannot_be_read_is_a_json_400_not_an_exception(lambda_handler, invocation):
    before = WebhookEvent.objects.count()
    answer = lambda_handler(invocation)
    assert answer["statusCode"] == 400, answer
    assert json.loads(answer["body"])["error"] == "bad_request"
    assert WebhookEvent.objects.count() == before
