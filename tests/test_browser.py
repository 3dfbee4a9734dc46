"""A real browser through a real ``athm serve``: what a merchant does on the first day, checked end to end.

Debian's Chromium, headless, driven by selenium, against ``athm serve`` with ``ATHM_ADMIN=1`` on an SQLite
file of its own (migrated with the admin, a superuser made by ``athm createsuperuser --noinput``), after a
webhook has been posted: log in through the login form (the CSRF check a browser's Origin meets), see the
admin's CSS applied, open the overview and find the payment, open the payment's page, and reprocess the
webhook from the events list with the admin's action.

And a refund, with ``athm serve``'s ATH Móvil the fake one in this process (tests/fake_athm.py) and tokens
set: select the payment in the payments list, choose "Refund through ATH Móvil", read what is refundable on
the confirmation page, refund part of it with a message, and find the refund sent to ATH Móvil once (the
amount asked for, the private token), said in a success message, and on the payment's page: the
refundable amount reduced and the refund completed.

Without Chromium, its driver or selenium the test skips, saying which is missing; with ``CI`` set it fails
instead, like the database suites (tests/conftest.py): a CI machine that cannot run it is misconfigured
(``.ci/run`` installs ``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SECRET, sample
from tests.fake_athm import FakeAthm, fake_athm_fixture  # noqa: F401
from tests.test_admin_serve import PASSWORD, athm, create_superuser
from tests.test_local import serving

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 30  # seconds for a page to load in a slow CI machine
REFUND_PATH = "/api/business-transaction/ecommerce/refund"
PUBLIC = "pub-browser"
PRIVATE = "priv-NEVER-SHOWN-browser-7a6b5c4d3e"


def missing() -> str:
    """What the test needs and this machine lacks, or ``""``."""
    lacking = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        lacking.append("selenium (pip install -e '.[dev]')")
    return ", ".join(lacking)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium under selenium; skipped (failed with CI set) where it cannot run."""
    lacking = missing()
    if lacking:
        reason = f"a real browser is needed and this machine lacks {lacking}; CI=1 makes this an error"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def serving_a_payment(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``athm serve`` on ``env`` with the admin on, a superuser made and one webhook applied: yields its base
    URL."""
    env = {**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'browser.sqlite3'}", "ATHM_ADMIN": "1"}
    migrated = athm(env, "migrate", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    created = create_superuser(env)
    assert created.returncode == 0, created.stderr
    with serving(env, tmp_path / "serve.log") as (base, _):
        request = urllib.request.Request(
            f"{base}/webhook/{SECRET}",
            data=sample("ecommerce_completed.production").encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.load(response)["outcome"] == "applied"
        yield base


@pytest.fixture
def served(child_env, tmp_path) -> Iterator[str]:
    """``athm serve`` with the admin on, a superuser made and one webhook applied: yields its base URL."""
    with serving_a_payment(child_env, tmp_path) as base:
        yield base


@pytest.fixture
def served_with_ath(child_env, tmp_path, fake_athm: FakeAthm) -> Iterator[str]:
    """The same, with ATH Móvil's tokens set and both of its API hosts the fake one in this process;
    verification off, so that the webhook is applied as in ``served``."""
    env = {**child_env, **fake_athm.environment(PUBLIC, PRIVATE)}
    with serving_a_payment(env, tmp_path) as base:
        yield base


def log_in(browser: Any, base: str) -> None:
    """Through the login form, as the merchant: returns on the admin's index."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as until
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{base}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("merchant")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    WebDriverWait(browser, WAIT).until(until.presence_of_element_located((By.ID, "athm-overview-link")))


def test_a_merchant_logs_in_sees_the_payment_and_reprocesses_the_webhook(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as until
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT)
    reference = json.loads(sample("ecommerce_completed.production"))["referenceNumber"]

    # The login form: a POST from http://127.0.0.1:PORT that the CSRF check lets through.
    log_in(browser, served)
    assert "CSRF" not in browser.page_source
    # The admin's stylesheets were served and applied: the header has the admin's colour, not none.
    header = browser.execute_script(
        "return getComputedStyle(document.getElementById('header')).backgroundColor"
    )
    assert header not in ("", "rgba(0, 0, 0, 0)", "transparent"), header

    # The overview, from the index's link.
    browser.find_element(By.CSS_SELECTOR, "#athm-overview-link a").click()
    wait.until(until.presence_of_element_located((By.ID, "payments")))
    payments = browser.find_element(By.ID, "payments").text
    assert reference in payments and "Luis Ortiz" in payments and "$26.00" in payments
    assert "Completed" in payments
    webhooks = browser.find_element(By.ID, "webhooks").text
    assert "Online payment completed" in webhooks and "Applied" in webhooks

    # The payment's own page.
    browser.find_element(By.CSS_SELECTOR, "#payments tbody a").click()
    wait.until(until.url_contains("/admin/athm_core/payment/"))
    assert reference in browser.find_element(By.ID, "content").text

    # The webhook, reprocessed from its list with the admin's action.
    browser.get(f"{served}/admin/athm_core/webhookevent/")
    browser.find_element(By.CSS_SELECTOR, "input.action-select").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("reprocess_selected")
    browser.find_element(By.CSS_SELECTOR, "#changelist-form button[name=index]").click()
    wait.until(until.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist")))
    said = browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    assert "1 event(s) reprocessed" in said, said
    assert "duplicate" in said, said  # the payment was already recorded: nothing applied twice
    assert len(browser.find_elements(By.CSS_SELECTOR, "input.action-select")) == 2  # the new attempt, kept


def test_a_merchant_refunds_part_of_a_payment_from_the_admin(browser, served_with_ath, fake_athm):
    """The payments' action "Refund through ATH Móvil", in a browser: the confirmation page shows the
    payment's total as refundable and sends nothing; confirmed with an amount and a message, one request
    reaches ATH Móvil (that amount, that message, the payment's reference number, the tokens), a success
    message names the refund, and the payment's page shows the rest as refundable and the refund completed.
    Neither the page that says so nor the payment's page shows the private token."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as until
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT)
    reference = json.loads(sample("ecommerce_completed.production"))["referenceNumber"]
    ath_reference = "215070555-402894c185ab1be40185acfe61c2refund"
    fake_athm.answer(
        REFUND_PATH,
        200,
        {
            "status": "success",
            "data": {
                "refund": {"referenceNumber": ath_reference, "refundedAmount": "10.00"},
                "originalTransaction": {"referenceNumber": reference},
            },
        },
    )
    log_in(browser, served_with_ath)

    # The payments list: the payment selected, the action chosen, Go.
    browser.get(f"{served_with_ath}/admin/athm_core/payment/")
    browser.find_element(By.CSS_SELECTOR, "input.action-select").click()
    Select(browser.find_element(By.NAME, "action")).select_by_visible_text("Refund through ATH Móvil")
    browser.find_element(By.CSS_SELECTOR, "#changelist-form button[name=index]").click()

    # The confirmation page: the whole total refundable, nothing sent yet.
    wait.until(until.presence_of_element_located((By.CSS_SELECTOR, "body.refund-confirmation")))
    refundable = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "td.refundable")]
    assert refundable == ["26.00"], refundable
    assert reference in browser.find_element(By.ID, "content").text
    assert fake_athm.requests_to(REFUND_PATH) == []

    # Part of it refunded, with a message for the customer.
    browser.find_element(By.ID, "id_amount").send_keys("10.00")
    browser.find_element(By.ID, "id_message").send_keys("Sorry: one pastelillo was missing")
    browser.find_element(By.CSS_SELECTOR, "#content-main form input[type=submit]").click()
    wait.until(until.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist")))
    said = browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    succeeded = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "ul.messagelist li.success")]
    assert len(succeeded) == 1 and "refunded 10.00" in succeeded[0], said
    assert ath_reference in succeeded[0], said
    assert not browser.find_elements(By.CSS_SELECTOR, "ul.messagelist li.error, ul.messagelist li.warning")
    assert PRIVATE not in browser.page_source

    # ATH Móvil was asked once, for that amount, with the tokens.
    sent = fake_athm.requests_to(REFUND_PATH)
    assert len(sent) == 1, sent
    assert sent[0].method == "POST"
    assert sent[0].json == {
        "publicToken": PUBLIC,
        "privateToken": PRIVATE,
        "referenceNumber": reference,
        "amount": "10.00",
        "message": "Sorry: one pastelillo was missing",
    }

    # Back on the list, the refunded column says it; on the payment's page, 16.00 is left and the refund
    # is listed, completed.
    refunded = browser.find_element(By.CSS_SELECTOR, "#result_list td.field-total_refunded_amount").text
    assert refunded == "10.00", refunded
    browser.find_element(By.CSS_SELECTOR, "#result_list th.field-reference_number a").click()
    wait.until(until.presence_of_element_located((By.ID, "refunds-group")))
    left = browser.find_element(By.CSS_SELECTOR, ".field-refundable_amount .readonly").text
    assert left == "16.00", left
    rows = browser.find_elements(By.CSS_SELECTOR, "#refunds-group tbody tr.has_original")
    assert len(rows) == 1, [row.text for row in rows]

    def cell(field: str) -> str:
        return rows[0].find_element(By.CSS_SELECTOR, f"td.field-{field}").text

    assert (cell("amount"), cell("status"), cell("refund_reference_number")) == (
        "10.00",
        "Completed",
        ath_reference,
    )
    assert PRIVATE not in browser.page_source
