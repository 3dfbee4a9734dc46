"""A real browser through a real ``athm serve``: what a merchant does on the first day, checked end to end.

Debian's Chromium, headless, driven by selenium, against ``athm serve`` with ``ATHM_ADMIN=1`` on an SQLite
file of its own (migrated with the admin, a superuser made by ``athm createsuperuser --noinput``), after a
webhook has been posted: log in through the login form (the CSRF check a browser's Origin meets), see the
admin's CSS applied, open the overview and find the payment, open the payment's page, and reprocess the
webhook from the events list with the admin's action.

Without Chromium, its driver or selenium the test skips, saying which is missing; with ``CI`` set it fails
instead, like the database suites (tests/conftest.py): a CI machine that cannot run it is misconfigured
(``.ci/run`` installs ``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SECRET, sample
from tests.test_admin_serve import PASSWORD, athm, create_superuser
from tests.test_local import serving

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 30  # seconds for a page to load in a slow CI machine


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


@pytest.fixture
def served(child_env, tmp_path) -> Iterator[str]:
    """``athm serve`` with the admin on, a superuser made and one webhook applied: yields its base URL."""
    env = {**child_env, "DATABASE_URL": f"sqlite:///{tmp_path / 'browser.sqlite3'}", "ATHM_ADMIN": "1"}
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


def test_a_merchant_logs_in_sees_the_payment_and_reprocesses_the_webhook(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as until
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT)
    reference = json.loads(sample("ecommerce_completed.production"))["referenceNumber"]

    # The login form: a POST from http://127.0.0.1:PORT that the CSRF check lets through.
    browser.get(f"{served}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("merchant")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    wait.until(until.presence_of_element_located((By.ID, "athm-overview-link")))
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
