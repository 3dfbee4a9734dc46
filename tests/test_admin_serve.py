"""The admin as a merchant meets it: ``athm createsuperuser`` without knowing about ``ATHM_ADMIN``, a login
from a real browser through ``athm serve`` (CSRF checked against the plain-http URL it really serves), the
admin's CSS and pictures served, the start-up banner naming the pages, and the overview page of payments,
refunds, deliveries and what is still unfinished.

The processes here run on an SQLite file of their own (the admin's tables exist only with the admin on);
the overview's script runs on each test database's server, like the rest of the admin's tests.
"""

from __future__ import annotations

import html
import http.client
import re
import subprocess
import threading
from datetime import datetime
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import django
import pytest

from tests.conftest import ROOT, SECRET
from tests.test_local import athm_command, serving

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-long-local-password-8f3e"
ADMIN_STATIC = Path(django.__file__).parent / "contrib" / "admin" / "static"


@pytest.fixture
def env(child_env, tmp_path) -> dict[str, str]:
    """A child's environment on an SQLite file of its own, without ATHM_ADMIN."""
    return {**child_env, "DATABASE_URL": f"sqlite:///{tmp_path / 'admin.sqlite3'}"}


def athm(env: dict[str, str], *args: str, **changes: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*athm_command(), *args],
        env={**env, **changes},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def migrate_with_the_admin(env: dict[str, str]) -> None:
    result = athm(env, "migrate", "-v", "0", ATHM_ADMIN="1")
    assert result.returncode == 0, result.stderr


def create_superuser(env: dict[str, str]) -> subprocess.CompletedProcess:
    return athm(
        env,
        "createsuperuser",
        "--noinput",
        "--username",
        "merchant",
        "--email",
        "merchant@example.com",
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
    )


# --- the commands ---------------------------------------------------------------------------------------


def test_createsuperuser_and_changepassword_work_without_the_variable(env):
    migrate_with_the_admin(env)
    assert "ATHM_ADMIN" not in env
    created = create_superuser(env)
    assert created.returncode == 0, created.stdout + created.stderr
    assert "Superuser created successfully" in created.stdout
    # changepassword is a known command too: it looks the user up (and asks for no password for nobody).
    changed = athm(env, "changepassword", "nobody")
    assert "Unknown command" not in changed.stderr
    assert "user 'nobody' does not exist" in changed.stderr
    check = athm(
        env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; u = User.objects.get(username='merchant'); "
        f"print(u.is_superuser, u.is_staff, u.check_password({PASSWORD!r}))",
        ATHM_ADMIN="1",
    )
    assert check.stdout.splitlines()[-1].split() == ["True", "True", "True"], check.stderr


def test_without_the_admin_s_tables_createsuperuser_says_how_to_make_them(env):
    result = athm(env, "migrate", "-v", "0")  # no ATHM_ADMIN: the admin's tables are not made
    assert result.returncode == 0, result.stderr
    for command in (["createsuperuser", "--noinput", "--username", "merchant"], ["changepassword", "x"]):
        result = athm(env, *command, DJANGO_SUPERUSER_PASSWORD=PASSWORD)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "ATHM_ADMIN=1 athm migrate" in result.stderr and "make serve" in result.stderr


def test_an_admin_command_without_the_variable_names_it(env):
    result = athm(env, "clearsessions")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "ATHM_ADMIN=1" in result.stderr
    # Set to 0 on purpose, the admin stays off, and createsuperuser says what to set.
    result = athm(env, "createsuperuser", "--noinput", ATHM_ADMIN="0")
    assert result.returncode == 1 and "ATHM_ADMIN=1" in result.stderr


# --- athm serve, as a browser uses it -------------------------------------------------------------------


@pytest.fixture
def admin_server(env, tmp_path):
    """``athm serve`` with the admin on, a superuser made: yields (base URL, process)."""
    migrate_with_the_admin(env)
    assert create_superuser(env).returncode == 0
    with serving({**env, "ATHM_ADMIN": "1"}, tmp_path / "serve.log") as running:
        yield running


class Browser:
    """Just enough of a browser: one connection per request, cookies kept, Origin sent on a POST."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.address = urlsplit(base)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None, **headers: str):
        connection = http.client.HTTPConnection(self.address.hostname, self.address.port, timeout=30)
        body = urlencode(form).encode() if form is not None else None
        headers = {key.replace("_", "-"): value for key, value in headers.items()}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers.setdefault("Origin", self.base)
            headers.setdefault("Referer", self.base + path)
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        content = response.read()
        connection.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return response, content


def log_in(browser: Browser):
    response, page = browser.request("GET", "/admin/login/?next=/admin/")
    assert response.status == 200, page[:300]
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
    assert "csrftoken" in browser.cookies
    form = {"csrfmiddlewaretoken": token, "username": "merchant", "password": PASSWORD, "next": "/admin/"}
    return browser.request("POST", "/admin/login/?next=/admin/", form)


def test_logging_in_through_athm_serve_passes_the_csrf_check(admin_server):
    base, _ = admin_server
    browser = Browser(base)
    response, page = log_in(browser)
    assert response.status == 302, page[:500]  # 403 "CSRF verification failed" before the fix
    assert response.headers["Location"] == "/admin/"
    assert "sessionid" in browser.cookies
    response, page = browser.request("GET", "/admin/")
    assert response.status == 200
    assert b'href="/admin/overview/"' in page  # the index leads to the overview
    response, page = browser.request("GET", "/admin/overview/")
    assert response.status == 200 and b"Latest payments" in page


def test_a_post_from_another_site_is_still_refused(admin_server):
    base, _ = admin_server
    browser = Browser(base)
    browser.request("GET", "/admin/login/")
    response, _ = browser.request(
        "POST", "/admin/login/", {"username": "merchant", "password": PASSWORD}, Origin="http://evil.example"
    )
    assert response.status == 403


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("admin/css/base.css", "text/css"),
        ("admin/js/core.js", "text/javascript"),
        ("admin/img/icon-yes.svg", "image/svg+xml"),
    ],
)
def test_serve_serves_the_admin_s_css_scripts_and_pictures_byte_for_byte(admin_server, path, content_type):
    base, _ = admin_server
    response, content = Browser(base).request("GET", f"/static/{path}")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith(content_type)
    assert content == (ADMIN_STATIC / path).read_bytes()


def test_the_admin_pages_point_at_the_static_files_served(admin_server):
    base, _ = admin_server
    browser = Browser(base)
    page = browser.request("GET", "/admin/login/")[1]
    stylesheets = re.findall(rb'<link rel="stylesheet" href="([^"]+)"', page)
    assert stylesheets and all(href.startswith(b"/static/admin/") for href in stylesheets)
    for href in stylesheets:
        assert browser.request("GET", href.decode())[0].status == 200


def banner_lines(process: subprocess.Popen, count: int, timeout: float = 60) -> str:
    """The next ``count`` lines ``athm serve`` prints, or what it printed by ``timeout``."""
    lines: list[str] = []

    def read() -> None:
        while len(lines) < count and (line := process.stdout.readline()):
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)  # ends when the server is stopped, if not before
    reader.start()
    reader.join(timeout)
    return "".join(lines)


def test_serve_s_banner_names_the_admin_and_the_overview(admin_server):
    base, process = admin_server
    banner = banner_lines(process, 4)
    assert f"{base}/admin/" in banner
    assert f"{base}/admin/overview/" in banner
    assert SECRET not in banner


def test_serve_s_banner_says_how_to_turn_the_admin_on(env, tmp_path):
    assert athm(env, "migrate", "-v", "0").returncode == 0
    with serving(env, tmp_path / "serve.log") as (_, process):
        banner = banner_lines(process, 3)
    assert "ATHM_ADMIN=1" in banner
    assert "/admin/overview/" not in banner


def test_the_admin_is_not_served_without_the_variable(env, tmp_path):
    result = athm(env, "migrate", "-v", "0")
    assert result.returncode == 0
    with serving(env, tmp_path / "serve.log") as (base, _):
        browser = Browser(base)
        assert browser.request("GET", "/admin/overview/")[0].status == 404
        assert browser.request("GET", "/static/admin/css/base.css")[0].status == 404


# --- the events the local server makes ------------------------------------------------------------------


def test_the_local_server_s_events_say_the_request_came_over_plain_http():
    """Mangum takes the scheme from X-Forwarded-Proto (https when absent, as behind API Gateway): the
    local server serves plain http, and says so, unless a proxy in front of it says otherwise."""
    from handler.local import http_api_event, make_server

    seen: list[dict] = []

    def lambda_handler(event, context):
        seen.append(event)
        return {"statusCode": 204, "headers": {}, "body": ""}

    server = make_server(lambda_handler, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for headers in ({}, {"X-Forwarded-Proto": "https"}):
            connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
            connection.request("GET", "/health", headers=headers)
            assert connection.getresponse().status == 204
            connection.close()
    finally:
        server.shutdown()
        server.server_close()
    assert [event["headers"]["x-forwarded-proto"] for event in seen] == ["http", "https"]
    # Events built for API Gateway's shape keep its https.
    assert "x-forwarded-proto" not in http_api_event("GET", "/health")["headers"]


# --- the overview page ----------------------------------------------------------------------------------

OVERVIEW_SCRIPT = """
import json
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from datetime import timedelta
from django.utils import timezone
from athm_core import processor
from athm_core.models import Notice, OutboxMessage, Payment, WebhookEvent
from athm_core.payloads import parse
from athm_core.receive import receive
from athm_core.signals import payment_received

settings.ATHM_OUTBOX = True  # messages written, none published: they wait

def deliver(body):
    return processor.process(parse(body), raw_body=body)

def email_customer(sender, payment, **kwargs):
    raise ConnectionError("the mail server is down")

payment_received.connect(email_customer)
completed = deliver(open("tests/samples/ecommerce_completed.production.json").read())
refunded = deliver(open("tests/samples/refund_sent.production.json").read())
received = deliver(open("tests/samples/payment_received.json").read())
invalid = receive(b'{"transactionType": "ECOMMERCE", "status": "COMPLETED"}')
now = timezone.now()
never_called = Notice.objects.create(
    signal="refund_sent", payment=refunded.refund.payment, refund=refunded.refund, webhook_event=refunded,
    receivers=[{"receiver": "shop.receivers.record_refund", "state": "pending"}],
    created_at=now, next_attempt_at=now,
)
payment = Payment.objects.get(pk=completed.payment_id)

# Recorded after the payment received (Nov 22) but paid before it (Nov 20): the list is by the payment's date.
earlier = deliver(open("tests/samples/ecommerce_completed.documented.json").read())
cancelled = deliver(open("tests/samples/ecommerce_cancelled.production.json").read())  # no reference number

# Deliveries that need a look, and others settled since by a later delivery of the same event.
def sample(name):
    return open(f"tests/samples/{name}.json").read()

def keep(body, outcome, event=True, **options):
    return processor.record(body, outcome, event=parse(body) if event else None, error="why", **options)

soon, past = now + timedelta(minutes=5), now - timedelta(minutes=1)
trouble = {
    "failed": keep(sample("ecommerce_completed.legacy"), "failed"),
    "failed_not_json": keep("not json {", "failed", event=False),
    "pending_later": keep(sample("ecommerce_expired.legacy"), "pending", verify_after=soon),
    "pending_due": keep(sample("ecommerce_cancelled.legacy"), "pending", verify_after=past),
    "pending_empty": keep("", "pending", event=False, verify_after=past),
    "unverified": keep(sample("donation_received"), "unverified"),
    "rejected_list": keep("[1, 2]", "rejected", event=False),
    "rejected_odd": keep(json.dumps({"metadata1": {"x": 1}, "total": "abc", "ecommerceId": None,
        "name": "Secret Name", "phoneNumber": "7875550199", "email": "secret@example.com"}),
        "rejected", event=False),
    "rejected_deep": keep("[" * 100000, "rejected", event=False),
    "invalid": invalid.record,
}
settled = {
    "failed_applied_since": keep(sample("payment_received"), "failed"),
    "pending_settled": keep(sample("ecommerce_expired"), "pending", verify_after=past),
    "unverified_applied_since": keep(sample("refund_sent.documented"), "unverified"),
    "rejected_purged": keep(sample("simulated"), "rejected"),
    # Held for ATH Móvil's verification, then applied by a later delivery (ATH's retry, athm reprocess).
    "pending_applied_since": keep(sample("ecommerce_cancelled.documented"), "pending", verify_after=past),
}
WebhookEvent.objects.filter(pk=settled["pending_settled"].pk).update(settled_by=earlier, verify_after=None)
WebhookEvent.objects.filter(pk=settled["rejected_purged"].pk).update(raw_body="", purged_at=now)
deliver(sample("refund_sent.documented"))
deliver(sample("ecommerce_cancelled.documented"))

result = {
    "payment": [payment.pk, payment.reference_number],
    "refund_pk": refunded.refund.pk,
    "invalid_outcome": invalid.record.outcome,
    "invalid_event": invalid.record.pk,
    "invalid_error": invalid.record.error,
    "pending_outbox": OutboxMessage.objects.filter(published_at=None).count(),
    "unfinished": Notice.objects.filter(delivered_at=None).count(),
}
client = Client()
result["anonymous"] = [client.get("/admin/overview/").status_code, client.get("/admin/overview/")["Location"]]
User.objects.create_user("clerk", password="pw")
client.login(username="clerk", password="pw")
result["not_staff"] = client.get("/admin/overview/").status_code
User.objects.create_superuser("admin", "admin@example.com", "pw")
client.login(username="admin", password="pw")
response = client.get("/admin/overview/")
result["status"] = response.status_code
result["page"] = response.content.decode()
result["index"] = client.get("/admin/").content.decode()
result["trouble"] = {name: row.pk for name, row in trouble.items()}
result["settled"] = {name: row.pk for name, row in settled.items()}
result["earlier"] = [earlier.payment_id, cancelled.payment.ecommerce_id]
viewer = Client()
User.objects.create_user("viewer", password="pw", is_staff=True)
viewer.login(username="viewer", password="pw")
result["no_permission"] = viewer.get("/admin/overview/").content.decode()

def queries():
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/admin/overview/").status_code == 200
    return len(captured)

before = queries()
body = open("tests/samples/payment_received.json").read()
for number in range(1, 6):
    deliver(body.replace("215070500-", f"21507050{number}-"))
    keep(body.replace("215070500-", f"21507060{number}-"), "failed")
    keep(body.replace("215070500-", f"21507070{number}-"), "rejected")
    keep(body.replace("215070500-", f"21507080{number}-"), "pending", verify_after=past)
result["queries"] = [before, queries()]
print(json.dumps(result, default=str))
"""

_OVERVIEW: dict = {}


@pytest.fixture
def overview(child_env, tmp_path) -> dict:
    """What the overview script saw; it runs once for the module's tests."""
    if not _OVERVIEW:
        from tests.test_admin_notices import run_with_the_admin

        _OVERVIEW.update(run_with_the_admin(OVERVIEW_SCRIPT, child_env, tmp_path))
    return _OVERVIEW


def test_the_overview_needs_a_staff_login(overview):
    status, location = overview["anonymous"]
    assert status == 302 and location.startswith("/admin/login/?next=/admin/overview/")
    assert overview["not_staff"] == 302
    assert overview["status"] == 200


def test_the_overview_lists_the_latest_payments_in_plain_words(overview):
    page = overview["page"]
    pk, reference = overview["payment"]
    assert "Latest payments" in page
    assert f'href="/admin/athm_core/payment/{pk}/change/"' in page
    assert reference in page
    assert "Luis Ortiz" in page
    assert "$26.00" in page
    assert "Completed" in page
    # Puerto Rico time: ATH Móvil's 2026-11-20 14:07:37 is already local.
    assert "Nov 20, 2026, 2:07 PM" in page
    assert "Puerto Rico time" in page
    assert "Django" not in page.split("<body", 1)[1].split('id="content"', 1)[1]


def test_the_overview_lists_refunds_and_deliveries_with_their_outcome(overview):
    page = overview["page"]
    assert "Latest refunds" in page
    assert f'href="/admin/athm_core/refund/{overview["refund_pk"]}/change/"' in page
    assert "Latest webhooks from ATH Móvil" in page
    assert overview["invalid_outcome"] == "invalid"
    assert f'href="/admin/athm_core/webhookevent/{overview["invalid_event"]}/change/"' in page
    assert "Invalid payload" in page and "Applied" in page
    assert overview["invalid_error"] and overview["invalid_error"] in page


def test_the_overview_shows_what_is_still_unfinished(overview):
    page = overview["page"]
    assert overview["unfinished"] == 2 and overview["pending_outbox"] >= 3
    assert "ConnectionError: the mail server is down" in page
    assert "email_customer" in page and "failed" in page
    assert "record_refund" in page and "not run yet" in page
    assert re.search(r"<strong>2</strong>\s+unfinished", page), page
    assert re.search(rf"<strong>{overview['pending_outbox']}</strong>\s+waiting", page)
    assert "oldest since" in page


def test_the_index_leads_to_the_overview(overview):
    assert 'href="/admin/overview/"' in overview["index"]


def test_the_overview_costs_no_query_per_row(overview):
    before, after = overview["queries"]
    assert before == after


def test_the_overview_posts_nothing_and_changes_nothing(overview):
    page = overview["page"]
    assert "<form" not in page.split('id="content"', 1)[1].split('id="footer"', 1)[0]


def section(page: str, section_id: str) -> str:
    """The HTML of the overview's section ``section_id`` (a ``<div class="module" id=...>``), or ''."""
    start = page.find(f'id="{section_id}"')
    if start < 0:
        return ""
    end = page.find('<div class="module"', start)
    return page[start : end if end > 0 else len(page)]


def test_the_overview_says_who_retries_what_here_and_in_aws(overview):
    page = overview["page"]
    assert "automatically" not in page  # nothing runs the relay on this machine
    counts = section(page, "still-to-finish")
    assert "every minute" in counts and "athm relay" in counts
    assert "athm relay --watch 60" in counts and "--retry-now" in counts
    # The never-run notice was due at once: its next try is past, so it is due now, not a time gone by.
    assert "due now" in section(page, "unfinished")


def test_the_overview_counts_and_lists_the_deliveries_that_need_a_look(overview):
    page = overview["page"]
    counts = section(page, "still-to-finish")
    listed = section(page, "deliveries")
    total = len(overview["trouble"])
    assert re.search(rf"<strong>{total}</strong>\s+webhook deliver", counts), counts
    for name, pk in overview["trouble"].items():
        assert f'href="/admin/athm_core/webhookevent/{pk}/change/"' in listed, name
    for name, pk in overview["settled"].items():
        assert f'href="/admin/athm_core/webhookevent/{pk}/change/"' not in listed, name
    # The commands to run, in plain words.
    assert "athm reprocess --failed" in listed and "athm relay" in listed
    assert "rotate the webhook secret" in listed  # a rejected or unreadable body: maybe a forger
    # What each stored body says it is about: the order, the reference number or ecommerceId, the total.
    assert "order-2044" in listed and "402894d5-7c1e00aa19bd4e3c0f2b" in listed and "$12.50" in listed
    assert "order-2046" in listed  # pending, its next check in five minutes
    assert "due now" in listed  # pending, its next check already past
    assert "215070501-402894c185ab1be40185acfe61c2001b" in listed and "$20.00" in listed
    assert "Donation received" in listed and "Online payment completed" in listed
    assert "unreadable" in listed
    # No customer's name, phone or email from a stored body.
    for private in ("Marisol Ocasio", "José Vega", "Secret Name", "7875550199", "secret@example.com"):
        assert private not in page


def test_the_overview_lists_payments_by_their_date_and_identifies_each(overview):
    page = overview["page"]
    payments = section(page, "payments")
    header = payments.split("</thead>", 1)[0]
    assert "recorded" in header  # which date the list is ordered by
    assert "Order" in header and "order-1002" in payments
    pk, ecommerce_id = overview["earlier"]
    assert f'href="/admin/athm_core/payment/{pk}/change/"' in payments
    assert ecommerce_id in payments  # a cancelled checkout: no reference number, its ecommerceId
    dates = [
        datetime.strptime(html.unescape(cell), "%b %d, %Y, %I:%M %p")
        for cell in re.findall(r'<tr>\s*<td><a href="[^"]+">([^<]+)</a></td>', payments)
    ]
    assert len(dates) >= 4
    assert dates == sorted(dates, reverse=True), dates


def test_the_overview_names_the_payment_each_row_links_to(overview):
    page = overview["page"]
    assert "the payment</a>" not in page
    _, reference = overview["payment"]
    assert reference in section(page, "refunds") and reference in section(page, "webhooks")


def test_a_staff_user_without_permissions_is_told_why_the_page_is_empty(overview):
    page = overview["no_permission"]
    assert "Latest payments" not in page
    assert "may not view payments" in page and "ask a superuser" in page
