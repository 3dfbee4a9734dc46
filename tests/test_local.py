"""Local use without AWS: ``athm serve`` (an HTTP server in front of lambda_handler) and ``athm invoke``."""

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from athm_core.models import Payment, WebhookEvent
from tests.conftest import ROOT, SECRET, sample, start_moto

EVENTS = ROOT / "events"
# The sample API Gateway events under events/ post to this secret, the one `make serve` uses.
LOCAL_SECRET = "local-dev-secret"


def athm_command() -> list[str]:
    script = shutil.which("athm", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "handler.cli"]


@contextlib.contextmanager
def serving(env: dict[str, str], log_path: Path):
    """``athm serve`` on a free port: yields its base URL and process."""
    log = open(log_path, "w+")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [*athm_command(), "serve", "--port", "0"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        first_line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", first_line)
        assert match, first_line + log_path.read_text()
        yield f"http://127.0.0.1:{match.group(1)}", process
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture
def server(child_env, tmp_path):
    with serving(child_env, tmp_path / "serve.log") as running:
        yield running


def http(method: str, url: str, body: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=body.encode() if body else None, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_serve_answers_like_api_gateway_and_lambda(server):
    base, process = server
    status, answer = http("POST", f"{base}/webhook/{SECRET}", sample("ecommerce_completed.production"))
    assert (status, answer["outcome"]) == (200, "applied")
    record = WebhookEvent.objects.get(pk=answer["event_id"])
    assert record.source_ip == "127.0.0.1" and record.request_id
    assert Payment.objects.get().status == Payment.Status.COMPLETED
    assert http("POST", f"{base}/webhook/{SECRET}", sample("ecommerce_completed.production"))[1]["duplicate"]
    assert http("GET", f"{base}/health") == (200, {"status": "ok", "database": "ok"})
    assert http("POST", f"{base}/webhook/wrong", sample("simulated"))[0] == 404
    assert http("POST", f"{base}/webhook/{SECRET}", "{")[0] == 400
    process.terminate()
    output = process.communicate(timeout=30)[0]
    assert "POST /webhook/…" in output
    assert SECRET not in output


def invoke(event_file: Path, env: dict[str, str]) -> dict:
    result = subprocess.run(
        [*athm_command(), "invoke", str(event_file)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # The response is the last JSON document printed (logs come before it).
    return json.loads(result.stdout[result.stdout.rindex("\n{") + 1 :])


@pytest.mark.parametrize("name", ["webhook-http-api.json", "webhook-rest-api.json"])
def test_invoke_the_sample_api_gateway_events(child_env, name):
    env = {**child_env, "ATHM_WEBHOOK_SECRET": LOCAL_SECRET}
    response = invoke(EVENTS / name, env)
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["outcome"] == "applied"
    assert WebhookEvent.objects.get().source_ip == "203.0.113.7"
    health = invoke(EVENTS / "health.json", env)
    assert (health["statusCode"], json.loads(health["body"])) == (200, {"status": "ok", "database": "ok"})


def test_every_sample_event_posts_to_the_local_secret():
    quick_start = json.loads(sample("ecommerce_completed.production"))  # what the README's curl posts
    payments = set()
    for path in EVENTS.glob("webhook-*.json"):
        event = json.loads(path.read_text())
        assert (event.get("rawPath") or event.get("path")) == f"/webhook/{LOCAL_SECRET}"
        payload = json.loads(event["body"])
        # The production shape, for a payment of its own: not the quick start's, nor the other event's.
        assert payload.keys() == quick_start.keys()
        payments.add((payload["ecommerceId"], payload["referenceNumber"]))
    assert len(payments) == 2
    assert (quick_start["ecommerceId"], quick_start["referenceNumber"]) not in payments


def test_athm_is_djangos_command_line_with_the_settings_preset(child_env):
    result = subprocess.run(
        [*athm_command(), "help"], env=child_env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for command in ("migrate", "serve", "invoke"):
        assert command in result.stdout


def test_migrations_match_the_models(child_env):
    result = subprocess.run(
        [*athm_command(), "makemigrations", "--check", "--dry-run"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_read_only_admin_passes_djangos_checks(child_env):
    result = subprocess.run(
        [*athm_command(), "check", "--fail-level", "WARNING"],
        env={**child_env, "ATHM_ADMIN": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


ADMIN_SCRIPT = """
import json
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from athm_core import processor
from athm_core.models import Payment
from athm_core.payloads import parse

settings.ATHM_OUTBOX = True
body = open("tests/samples/ecommerce_completed.production.json").read()
record = processor.process(parse(body), raw_body=body)
message = record.outbox_messages.get()
payment = Payment.objects.get()
User.objects.create_superuser("admin", "admin@example.com", "pw")
client = Client()
client.login(username="admin", password="pw")
pages = {
    url: client.get(url).status_code
    for url in [
        "/admin/athm_core/payment/",
        f"/admin/athm_core/payment/{payment.pk}/change/",
        "/admin/athm_core/refund/",
        "/admin/athm_core/webhookevent/",
        f"/admin/athm_core/webhookevent/{record.pk}/change/",
        "/admin/athm_core/outboxmessage/?published_at__isnull=True",
        f"/admin/athm_core/outboxmessage/{message.pk}/change/",
        "/admin/athm_core/payment/add/",
        f"/admin/athm_core/payment/{payment.pk}/delete/",
    ]
}
edit = client.post(f"/admin/athm_core/payment/{payment.pk}/change/", {"status": "cancelled"}).status_code
payment.refresh_from_db()
print(json.dumps({"pages": pages, "edit": edit, "status": payment.status}))
"""


def run_with_the_admin(script: str, child_env: dict[str, str], tmp_path: Path) -> dict:
    """Run ``script`` in ``athm shell`` with the admin on a fresh SQLite database; its last line, as JSON."""
    env = {**child_env, "ATHM_ADMIN": "1", "DATABASE_URL": f"sqlite:///{tmp_path / 'admin.sqlite3'}"}
    migrate = subprocess.run([*athm_command(), "migrate", "-v", "0"], env=env, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stderr
    result = subprocess.run(
        [*athm_command(), "shell", "-c", script], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_admin_shows_everything_and_changes_nothing(child_env, tmp_path):
    outcome = run_with_the_admin(ADMIN_SCRIPT, child_env, tmp_path)
    pages = list(outcome["pages"].values())
    assert pages[:7] == [200] * 7  # lists and read-only detail pages
    assert pages[7:] == [403, 403]  # no adding, no deleting
    assert outcome["edit"] == 403 and outcome["status"] == "completed"


def test_serve_publishes_to_the_sns_at_aws_endpoint_url_and_watch_topic_prints_it(
    child_env, moto_server, tmp_path
):
    # What the README's local SNS recipe does, with moto's server standing in for `moto_server -p 5000`.
    arn = f"arn:aws:sns:us-east-1:123456789012:athm-local-{uuid.uuid4().hex[:8]}"
    env = {**child_env, **moto_server, "ATHM_SNS_TOPIC_ARN": arn}
    watcher = subprocess.Popen(
        [*athm_command(), "watch_topic", "--create", "--max-messages", "2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert watcher.stdout.readline().startswith(f"watching {arn}")
    with serving(env, tmp_path / "serve.log") as (base, _):
        assert http("POST", f"{base}/webhook/{SECRET}", sample("ecommerce_completed.production"))[0] == 200
        assert http("POST", f"{base}/webhook/{SECRET}", sample("refund_sent.production"))[0] == 200
    output, _ = watcher.communicate(timeout=60)
    assert watcher.returncode == 0
    printed = [json.loads(line) for line in output.splitlines()]
    assert [m["attributes"]["event_type"] for m in printed] == ["payment_completed", "refund_sent"]
    assert [m["body"]["type"] for m in printed] == ["payment_completed", "refund_sent"]
    refunded = printed[1]["body"]
    assert refunded["payment"]["total_refunded_amount"] == refunded["refund"]["amount"] == "26.00"


def test_watch_topic_needs_a_topic(child_env):
    result = subprocess.run(
        [*athm_command(), "watch_topic"], env=child_env, cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1 and "set ATHM_SNS_TOPIC_ARN" in result.stderr


def test_serve_reads_a_chunked_body(server):
    """curl and many HTTP clients send a body of unknown length chunked (Transfer-Encoding: chunked), with
    no Content-Length: API Gateway hands the function the whole body, and so must athm serve."""
    import http.client
    from urllib.parse import urlsplit

    base, _ = server
    address = urlsplit(base)
    body = sample("ecommerce_completed.production").encode()
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.putrequest("POST", f"/webhook/{SECRET}")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for start in range(0, len(body), 100):
        piece = body[start : start + 100]
        connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert (response.status, answer["outcome"]) == (200, "applied")
    assert Payment.objects.get().status == Payment.Status.COMPLETED


def test_serve_answers_others_while_a_client_is_slow_to_send_its_body(server):
    """One client that opens a request and sends its body slowly must not stall the rest."""
    import socket
    from urllib.parse import urlsplit

    base, _ = server
    address = urlsplit(base)
    slow = socket.create_connection((address.hostname, address.port), timeout=30)
    try:
        slow.sendall(
            f"POST /webhook/{SECRET} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 500\r\n\r\n{".encode()
        )
        # The slow client has sent 1 byte of 500; another request is answered meanwhile.
        request = urllib.request.Request(f"{base}/health")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
    finally:
        slow.close()


def test_serve_prints_the_url_to_post_to_with_the_secret_masked(child_env, tmp_path):
    with serving(child_env, tmp_path / "serve.log") as (base, process):
        output = process.stdout.readline() + process.stdout.readline()  # the banner's next two lines
    assert f"POST {base}/webhook/{SECRET[:4]}…" in output
    assert SECRET not in output and "$ATHM_WEBHOOK_SECRET" not in output


def test_serve_and_invoke_say_on_stderr_when_no_webhook_secret_is_set(child_env, tmp_path):
    env = {key: value for key, value in child_env.items() if key != "ATHM_WEBHOOK_SECRET"}
    log = tmp_path / "serve.log"
    with serving(env, log) as (_, process):
        process.stdout.readline()  # the banner's GET line: the warning comes next, on stderr
        deadline = time.monotonic() + 30
        while "not set" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    said = log.read_text()
    assert "ATHM_WEBHOOK_SECRET is not set: every webhook gets 404" in said
    assert "athm new_secret" in said
    result = subprocess.run(
        [*athm_command(), "invoke", str(EVENTS / "webhook-http-api.json")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ATHM_WEBHOOK_SECRET is not set: every webhook gets 404" in result.stderr
    assert f"ATHM_WEBHOOK_SECRET={LOCAL_SECRET}" in result.stderr  # the secret the sample events post to


def test_watch_topic_says_so_in_a_line_when_sns_stops_answering(child_env, tmp_path):
    """moto's server (or the network) going away while watching ends the command with one clear line on
    stderr, not a traceback."""
    moto, aws = start_moto()
    env = {**child_env, **aws, "ATHM_SNS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:athm-watched"}
    watcher = subprocess.Popen(
        [*athm_command(), "watch_topic", "--create"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert watcher.stdout.readline().startswith("watching ")
    finally:
        moto.stop()
    _, errors = watcher.communicate(timeout=90)
    assert watcher.returncode == 1
    assert "Traceback" not in errors
    assert f"stopped answering at {aws['AWS_ENDPOINT_URL']}" in errors
    assert len(errors.strip().splitlines()) <= 3, errors


def test_invoking_the_sample_events_after_the_quick_start_applies_their_payments(child_env):
    """The README's quick start posts the production sample with curl; `athm invoke` of each sample event
    after it is a payment of its own (applied), not a duplicate of that one."""
    from athm_core import processor
    from athm_core.payloads import parse

    quick_start = sample("ecommerce_completed.production")
    processor.process(parse(quick_start), raw_body=quick_start)
    env = {**child_env, "ATHM_WEBHOOK_SECRET": LOCAL_SECRET}
    for name in ("webhook-http-api.json", "webhook-rest-api.json"):
        answer = json.loads(invoke(EVENTS / name, env)["body"])
        assert (answer["outcome"], answer["duplicate"]) == ("applied", False), name
    assert Payment.objects.filter(status=Payment.Status.COMPLETED).count() == 3


READABLE_LINE = re.compile(
    r"^\d\d:\d\d:\d\d INFO  webhook event processed  event_id=\d+ event_type=ecommerce\.completed"
    r" outcome=applied$",
    re.MULTILINE,
)
# What Lambda's context adds to its JSON lines, and the metric documents: none of it on a terminal.
LAMBDA_NOISE = ("function_arn", "function_request_id", "cold_start", "correlation_id", '"_aws"', '{"level"')


def test_invoke_prints_a_readable_line_per_log_record_and_no_metrics(child_env):
    env = {key: value for key, value in child_env.items() if key != "POWERTOOLS_METRICS_DISABLED"}
    env["ATHM_WEBHOOK_SECRET"] = LOCAL_SECRET
    result = subprocess.run(
        [*athm_command(), "invoke", str(EVENTS / "webhook-http-api.json")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    logs = result.stdout[: result.stdout.rindex("\n{")]
    assert READABLE_LINE.search(logs), logs
    assert not [noise for noise in LAMBDA_NOISE if noise in logs], logs
    # Asked for, the metrics are printed as in Lambda.
    result = subprocess.run(
        [*athm_command(), "invoke", str(EVENTS / "webhook-rest-api.json")],
        env={**env, "POWERTOOLS_METRICS_DISABLED": "false"}, cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"ColdStart"' in result.stdout and '"WebhookApplied"' in result.stdout


def test_serve_prints_a_readable_line_per_log_record_and_no_metrics(child_env, tmp_path):
    env = {key: value for key, value in child_env.items() if key != "POWERTOOLS_METRICS_DISABLED"}
    with serving(env, tmp_path / "serve.log") as (base, process):
        status, answer = http("POST", f"{base}/webhook/{SECRET}", sample("ecommerce_completed.production"))
        assert (status, answer["outcome"]) == (200, "applied")
        process.terminate()
        output = process.communicate(timeout=30)[0] + (tmp_path / "serve.log").read_text()
    assert READABLE_LINE.search(output), output
    assert not [noise for noise in LAMBDA_NOISE if noise in output], output
    assert SECRET not in output


def test_the_console_line_keeps_a_records_keys_names_its_logger_and_shows_its_traceback():
    import logging

    from handler.observability import ConsoleFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("athm_core.dispatch").makeRecord(
            "athm_core.dispatch", logging.ERROR, __file__, 1, "a receiver failed", (), sys.exc_info(),
            extra={"receiver": "shop.receivers.ship", "error_type": "ValueError", "report": {"failed": 1}},
        )  # fmt: skip
    first, *traceback = ConsoleFormatter().format(record).splitlines()
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d ERROR athm_core\.dispatch: a receiver failed  receiver=shop\.receivers\.ship"
        r' error_type=ValueError report=\{"failed":1\}',
        first,
    ), first
    assert traceback[0] == "Traceback (most recent call last):" and traceback[-1] == "ValueError: boom"


def test_console_logs_leave_the_json_logs_and_the_metrics_as_they_were(monkeypatch):
    """A command called in a process that goes on (call_command("relay")) gives the terminal's format
    back: the process's other logs stay Lambda's JSON, and its metrics on."""
    import io
    import os

    from handler.observability import console_logs, logger, metrics

    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    written = io.StringIO()
    stream = logger.registered_handler.setStream(written)
    try:
        with console_logs():
            logger.info("inside", extra={"event_id": 1})
            assert os.environ["POWERTOOLS_METRICS_DISABLED"] == "true"
        logger.info("after", extra={"event_id": 2})
    finally:
        logger.registered_handler.setStream(stream)
    inside, after = written.getvalue().splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO  inside  event_id=1", inside), inside
    assert json.loads(after)["message"] == "after" and json.loads(after)["event_id"] == 2
    assert "POWERTOOLS_METRICS_DISABLED" not in os.environ
    assert "add_cold_start_metric" not in vars(metrics.provider)


def test_serve_with_the_admin_on_a_database_without_its_tables_says_how_to_make_them(child_env, tmp_path):
    """``ATHM_ADMIN=1 athm serve`` (what the banner of a server without the admin suggests) on a database
    migrated without the admin: one line naming the command, not a server whose login answers 500."""
    import subprocess

    from tests.test_admin_serve import athm

    env = {**child_env, "DATABASE_URL": f"sqlite:///{tmp_path / 'no-admin.sqlite3'}"}
    assert athm(env, "migrate", "-v", "0").returncode == 0
    try:
        result = athm(env, "serve", "--port", "0", ATHM_ADMIN="1", ATHM_WEBHOOK_SECRET="local-dev-secret")
    except subprocess.TimeoutExpired:
        pytest.fail("athm serve started without the admin's tables")
    assert result.returncode != 0
    assert "the admin's tables are not in this database: run `ATHM_ADMIN=1 athm migrate`" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_names_athm_migrate_for_unapplied_migrations(child_env, tmp_path):
    """Django's own warning says ``python manage.py migrate``, a command this project does not have."""
    env = {**child_env, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}"}
    with serving(env, tmp_path / "serve.log"):
        pass
    warning = (tmp_path / "serve.log").read_text()
    assert "manage.py" not in warning and "not applied to this database: run `athm migrate`" in warning


def test_invoke_says_when_the_event_s_secret_is_not_the_function_s(child_env):
    """A configured secret that is not the one in the event's path: the 404 comes with why, on stderr."""
    env = {**child_env, "ATHM_WEBHOOK_SECRET": "another-secret-0123456789abcdef0123456789"}
    result = subprocess.run(
        [*athm_command(), "invoke", str(EVENTS / "webhook-http-api.json")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert '"statusCode": 404' in result.stdout
    assert "The event posts to /webhook/loca…, which is not a secret this function accepts" in result.stderr
    assert LOCAL_SECRET not in result.stderr


def test_watch_topic_says_when_sns_never_answered(child_env):
    """Nothing listening at AWS_ENDPOINT_URL from the start (moto's server not started yet): it is not
    answering, and the line says to start it, rather than that it stopped."""
    from tests.test_verification import closed_port

    endpoint = f"http://127.0.0.1:{closed_port()}"
    env = {
        **child_env,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_MAX_ATTEMPTS": "1",
        "ATHM_SNS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:athm-watched",
    }
    result = subprocess.run(
        [*athm_command(), "watch_topic", "--create"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"SNS/SQS is not answering at {endpoint}" in result.stderr
    assert "stopped" not in result.stderr
