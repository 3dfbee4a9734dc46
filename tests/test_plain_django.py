"""athm_core in an ordinary Django project, without the Lambda handler: a settings file of a few lines,
``migrate``, a webhook body through ``athm_core.receive.receive`` (verified with ATH Móvil), and the app's
own commands through Django's ``call_command``, against the fake ATH Móvil on 127.0.0.1."""

import json
import subprocess
import sys
import textwrap

from athm_core.ath.client import FIND_PAYMENT_PATH, REPORT_PATH
from tests.conftest import ROOT, SAMPLES, sample_data
from tests.fake_athm import fake_athm_fixture  # noqa: F401

COMPLETED = sample_data("ecommerce_completed.production")

# A Django project's settings file, as a merchant would write it: nothing from the handler.
SETTINGS = """
SECRET_KEY = "plain-django-project"
INSTALLED_APPS = ["athm_core"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {database!r}}}}}
USE_TZ = True
TIME_ZONE = "America/Puerto_Rico"
ATHM_PUBLIC_TOKEN = "pk_plain_project"
ATHM_PRIVATE_TOKEN = "sk_plain_project"
ATHM_API_BASE_URL = {ath!r}
ATHM_PAYMENTS_API_BASE_URL = {ath!r}
ROOT_URLCONF = "shop_urls"
"""

URLS = """
from django.urls import path

from shop_views import athm_webhook

urlpatterns = [path("athm/hook/s3cret-path-0123456789abcdef", athm_webhook)]
"""

SCRIPT = """
import io, json, sys
import django

django.setup()
from django.core.management import call_command

from athm_core.models import Payment, WebhookEvent
from athm_core.receive import receive
from athm_core.signals import payment_completed

call_command("migrate", verbosity=0)
heard = []
payment_completed.connect(lambda sender, payment, **kwargs: heard.append(str(payment.total)), weak=False)
body = open(sys.argv[1], "rb").read()
first = receive(body, source_ip="192.0.2.10", request_id="my-view")
again = receive(body)
from django.test import Client
answers = [
    (response.status_code, response.json())
    for response in (
        Client().post("/athm/hook/s3cret-path-0123456789abcdef", body, content_type="application/json"),
        Client().post("/athm/hook/s3cret-path-0123456789abcdef", b"{}", content_type="application/json"),
    )
]


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


purge = run("purge_events", "--older-than", "30", "--dry-run")
reconcile = run("reconcile", "--from", "2026-11-20", "--to", "2026-11-21", "--dry-run")
relay = run("relay", "--retry-now")
register = run("register_webhook", "https://shop.example/athm/hook/s3cret-path-0123456789abcdef", "--dry-run")
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in ("handler", "boto3", "botocore", "mangum", "aws_lambda_powertools")
)
print(json.dumps({
    "first": [first.outcome, first.record.source_ip, first.record.request_id],
    "again": again.outcome,
    "view": answers,
    "payment": [str(p.total) for p in Payment.objects.filter(status="completed")],
    "events": WebhookEvent.objects.count(),
    "heard": heard,
    "purge": purge,
    "reconcile": reconcile,
    "register": register,
    "relay": relay,
    "loaded": loaded,
}))
"""


def readme_example() -> str:
    """The view in docs/receivers.md's "athm_core in your own Django project"."""
    readme = (ROOT / "docs" / "receivers.md").read_text(encoding="utf-8")
    section = readme.split("## athm_core in your own Django project", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_athm_core_works_in_a_plain_django_project(fake_athm, tmp_path):
    found = {k: COMPLETED[k] for k in ("ecommerceId", "referenceNumber", "total")}
    fake_athm.answer(
        FIND_PAYMENT_PATH, 200, {"status": "success", "data": {**found, "ecommerceStatus": "COMPLETED"}}
    )
    # A donation the project has never heard of: the dry run would create it.
    lost = {**sample_data("donation_received"), "referenceNumber": "402400000000999", "total": 5}
    fake_athm.answer(REPORT_PATH, 200, [lost])
    project = tmp_path / "project"
    project.mkdir()
    (project / "shop_settings.py").write_text(
        textwrap.dedent(SETTINGS.format(database=str(tmp_path / "shop.sqlite3"), ath=fake_athm.base_url))
    )
    # The view is the documented example (docs/receivers.md), as a merchant would copy it.
    (project / "shop_views.py").write_text(readme_example())
    (project / "shop_urls.py").write_text(URLS)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{project}:{ROOT}",
        "DJANGO_SETTINGS_MODULE": "shop_settings",
    }
    sample = SAMPLES / "ecommerce_completed.production.json"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(sample)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["first"] == ["applied", "192.0.2.10", "my-view"]
    assert report["again"] == "duplicate"
    assert report["view"] == [[200, {"outcome": "duplicate"}], [400, {"outcome": "invalid"}]]
    assert report["payment"] == ["26.00"] and report["heard"] == ["26.00"] and report["events"] == 4
    # Verified with ATH Móvil (ATHM_VERIFY is on with the public token), once: the redelivery asks nothing.
    [asked] = fake_athm.requests_to(FIND_PAYMENT_PATH)
    assert asked.json == {"ecommerceId": COMPLETED["ecommerceId"], "publicToken": "pk_plain_project"}

    assert "would empty the stored bodies of 0 webhook events" in report["purge"]
    assert (
        "would create 1" in report["reconcile"] and "referenceNumber=402400000000999" in report["reconcile"]
    )
    assert "dry run: nothing was written" in report["reconcile"]
    [read] = fake_athm.requests_to(REPORT_PATH)
    assert read.json["privateToken"] == "sk_plain_project"
    assert "would POST" in report["register"] and "sk_plain_project" not in report["register"]
    # The listener's own secret path is masked, and routed by this project: no warning of a 404.
    assert "s3cret-path-0123456789abcdef" not in report["register"] and "s3cr…" in report["register"]
    assert "would get 404" not in report["register"]

    # The relay a plain project runs on a schedule: athm_core's own, without SNS.
    assert report["relay"].startswith("notices: linked 0 waiting refund(s), delivered 0")
    assert report["loaded"] == []  # no handler, no AWS SDK, no Lambda adapter
