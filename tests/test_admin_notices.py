"""The admin shows each event's notices and what every receiver did with them, lists the notices on their
own, costs no query per listed row, and still changes nothing by hand.

The admin is on only with ``ATHM_ADMIN=1``, which the test settings leave off: the script runs in
``athm shell`` with the admin, against a database of its own on the test database's server (a file beside
it on SQLite), so that each database's run covers its own SQL.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import ROOT, database_url
from tests.test_local import athm_command

pytestmark = pytest.mark.django_db(transaction=True)


def run_with_the_admin(script: str, child_env: dict[str, str], tmp_path: Path) -> dict:
    """Run ``script`` in ``athm shell`` with the admin on a fresh database; its last line, as JSON."""
    if connection.vendor == "sqlite":
        url = database_url(str(tmp_path / "admin.sqlite3"))
    else:
        name = f"athm_admin_test_{os.getpid()}"
        quoted = connection.ops.quote_name(name)
        charset = " CHARACTER SET utf8mb4" if connection.vendor == "mysql" else ""
        with connection._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {quoted}")
            cursor.execute(f"CREATE DATABASE {quoted}{charset}")
        url = database_url(name)
    env = {**child_env, "ATHM_ADMIN": "1", "DATABASE_URL": url}
    try:
        migrate = subprocess.run(
            [*athm_command(), "migrate", "-v", "0"], env=env, capture_output=True, text=True, timeout=300
        )
        assert migrate.returncode == 0, migrate.stderr
        result = subprocess.run(
            [*athm_command(), "shell", "-c", script],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
    finally:
        if connection.vendor != "sqlite":
            with connection._nodb_cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {quoted}")
    return json.loads(result.stdout.strip().splitlines()[-1])


SCRIPT = """
import json
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, setup_test_environment
from django.utils import timezone
from athm_core import processor
from athm_core.models import Notice, WebhookEvent
from athm_core.payloads import parse
from athm_core.signals import payment_completed, payment_received

setup_test_environment()  # the test client then keeps each response's context
mail = {"down": True}

def mark_paid(sender, payment, **kwargs):
    pass

def email_customer(sender, payment, **kwargs):
    if mail["down"]:
        raise ConnectionError("the mail server is down")

payment_completed.connect(mark_paid)
payment_completed.connect(email_customer)
payment_received.connect(email_customer)

def deliver(body):
    return processor.process(parse(body), raw_body=body)

def app_payment(number):
    body = open("tests/samples/payment_received.json").read()
    return deliver(body.replace("215070500-", f"21507050{number}-"))

completed = deliver(open("tests/samples/ecommerce_completed.production.json").read())
refunded = deliver(open("tests/samples/refund_sent.production.json").read())  # nobody listens to refund_sent
received = app_payment(0)
# A notice whose delivery died before calling its receiver (written here by hand).
now = timezone.now()
never_called = Notice.objects.create(
    signal="refund_sent", payment=refunded.refund.payment, refund=refunded.refund, webhook_event=refunded,
    receivers=[{"receiver": "shop.receivers.record_refund", "state": "pending"}],
    created_at=now, next_attempt_at=now,
)
notice = {
    "completed": completed.notices.get().pk,
    "refunded": refunded.notices.exclude(pk=never_called.pk).get().pk,
    "never_called": never_called.pk,
    "received": received.notices.get().pk,
}
notice_id = str(Notice.objects.get(pk=notice["completed"]).notice_id)

User.objects.create_superuser("admin", "admin@example.com", "pw")
client = Client()
client.login(username="admin", password="pw")
events_url = "/admin/athm_core/webhookevent/"
notices_url = "/admin/athm_core/notice/"
event_admin = admin.site._registry[WebhookEvent]
notice_admin = admin.site._registry[Notice]

def text(url):
    response = client.get(url)
    return response.status_code, response.content.decode()

def listed(url):
    response = client.get(url)
    return sorted(row.pk for row in response.context["cl"].result_list)

def queries(url):
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)

def failed_column():
    response = client.get(events_url)
    with CaptureQueriesContext(connection) as captured:
        column = {row.pk: event_admin.failed_receivers(row) for row in response.context["cl"].result_list}
    return column, len(captured)

result = {"notice": notice, "event_ids": {"completed": completed.pk}}
result["event_page"] = text(f"{events_url}{completed.pk}/change/")
result["refund_event_page"] = text(f"{events_url}{refunded.pk}/change/")
result["listing"] = text(events_url)
from athm_core.admin import local_dates_in_sql
result["local_dates_in_sql"] = local_dates_in_sql()
result["failed_column"] = failed_column()

response = client.get(notices_url)
result["notices_page"] = response.status_code
rows = response.context["cl"].result_list
result["summaries"] = {row.pk: notice_admin.receivers_summary(row) for row in rows}
result["unfinished"] = listed(notices_url + "?delivered_at__isempty=1")
result["finished"] = listed(notices_url + "?delivered_at__isempty=0")
result["refund_signal"] = listed(notices_url + "?signal=refund_sent")
result["searched"] = listed(notices_url + "?q=" + notice_id)
result["notice_page"] = text(f"{notices_url}{notice['completed']}/change/")
result["writes"] = [
    client.get(notices_url + "add/").status_code,
    client.post(f"{notices_url}{notice['completed']}/change/", {"signal": "payment_expired"}).status_code,
    client.post(f"{notices_url}{notice['completed']}/delete/", {"post": "yes"}).status_code,
]

# The same pages, with more events whose receivers failed: not one query more.
client.get(events_url), client.get(notices_url)  # warm: the session, the content types
before = [queries(events_url), queries(notices_url)]
for number in range(1, 5):
    app_payment(number)
result["queries"] = [before, [queries(events_url), queries(notices_url)]]
result["failed_column_after"] = failed_column()

# The mail server is back: the admin's action delivers what is unfinished, and only that.
mail["down"] = False
data = {"action": "redispatch_selected", "_selected_action": [completed.pk], "index": 0}
response = client.post(events_url, data, follow=True)
result["redispatch"] = [response.status_code, [str(m) for m in response.context["messages"]]]
result["receivers_after"] = Notice.objects.get(pk=notice["completed"]).receivers
result["failed_after"] = failed_column()[0][completed.pk]
print(json.dumps(result, default=str))
"""


_OUTCOME: dict = {}


@pytest.fixture
def outcome(child_env, tmp_path) -> dict:
    """What the script saw; it runs once for the module's tests."""
    if not _OUTCOME:
        _OUTCOME.update(run_with_the_admin(SCRIPT, child_env, tmp_path))
    return _OUTCOME


def test_an_event_s_page_shows_each_notice_and_what_each_receiver_did(outcome):
    status, page = outcome["event_page"]
    assert status == 200
    assert "the signals this event sent, and what each receiver did" in page
    assert "payment_completed" in page
    assert "mark_paid</strong>: delivered (1 attempt, last " in page
    assert "email_customer</strong>: failed (1 attempt, last " in page
    # The exception, not the whole traceback: that is on the notice's own page.
    assert "ConnectionError: the mail server is down" in page
    assert "Traceback (most recent call last)" not in page
    # Read-only: nothing to add, change or delete in the inline.
    assert 'name="notices-MAX_NUM_FORMS" value="0"' in page and "Delete?" not in page
    assert 'id="id_notices-0-signal"' not in page  # shown, not in a form field

    status, page = outcome["refund_event_page"]
    assert status == 200
    assert "no receivers" in page  # refund_sent, which nobody listens to: delivered when written
    assert "record_refund</strong>: pending (not called yet)" in page


def test_the_notices_list_summarises_receivers_and_filters_the_unfinished(outcome):
    notice = outcome["notice"]
    assert outcome["notices_page"] == 200
    summaries = {int(pk): text for pk, text in outcome["summaries"].items()}
    assert summaries[notice["completed"]] == "1 delivered, 1 failed"
    assert summaries[notice["received"]] == "1 failed"
    assert summaries[notice["never_called"]] == "1 pending"
    assert summaries[notice["refunded"]] == "no receivers"

    unfinished = sorted([notice["completed"], notice["received"], notice["never_called"]])
    assert outcome["unfinished"] == unfinished
    assert outcome["finished"] == [notice["refunded"]]
    assert outcome["refund_signal"] == sorted([notice["refunded"], notice["never_called"]])
    assert outcome["searched"] == [notice["completed"]]


def test_a_notice_s_page_has_the_whole_traceback_and_nothing_can_be_changed(outcome):
    status, page = outcome["notice_page"]
    assert status == 200
    assert "<pre>Traceback (most recent call last)" in page
    assert "ConnectionError: the mail server is down</pre>" in page
    assert "mark_paid</strong>: delivered (1 attempt" in page
    assert outcome["writes"] == [403, 403, 403]


def test_the_failed_receivers_column_costs_no_query_per_row(outcome):
    column, queries = outcome["failed_column"]
    assert queries == 0  # read from the notices fetched with the page
    assert sorted(column.values()) == [0, 1, 1]  # the completion's and the app payment's events
    events_before, notices_before = outcome["queries"][0]
    events_after, notices_after = outcome["queries"][1]
    assert (events_after, notices_after) == (events_before, notices_before)
    column, queries = outcome["failed_column_after"]
    assert queries == 0 and sum(column.values()) == 6


def test_the_admin_s_action_delivers_the_unfinished_notices_now(outcome):
    status, listing = outcome["listing"]
    assert status == 200 and "Deliver unfinished notices now" in listing
    status, messages = outcome["redispatch"]
    assert status == 200
    [sent, summary] = messages
    assert sent.startswith(f"event {outcome['event_ids']['completed']}: sent: ") and "email_customer" in sent
    assert summary == "1 event(s) redispatched"
    assert "mark_paid" not in sent  # it had the notice already
    states = {entry["receiver"].rsplit(".", 1)[-1]: entry for entry in outcome["receivers_after"]}
    assert states["mark_paid"]["state"] == states["email_customer"]["state"] == "delivered"
    assert (states["mark_paid"]["attempts"], states["email_customer"]["attempts"]) == (1, 2)
    assert outcome["failed_after"] == 0


def test_the_lists_drill_down_by_date_where_the_database_can_group_by_local_date(outcome):
    status, listing = outcome["listing"]
    assert status == 200
    if connection.vendor != "mysql":
        assert outcome["local_dates_in_sql"] is True
    # MySQL and MariaDB without their time zone tables: the list without the drill-down, not an error.
    assert ('<nav class="toplinks">' in listing) is outcome["local_dates_in_sql"]
