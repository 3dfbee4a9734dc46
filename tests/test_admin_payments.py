"""The payments admin finds people and shows a payment's story (issue 18): search by customer name, phone
(however it is written) and email besides ids and metadata; a created-at filter; a payment's page with its
deliveries as a timeline and its refundable amount; and two actions that ask ATH Móvil (a fake on
127.0.0.1): "Check with ATH Móvil" (a message per payment, nothing changed) and, for superusers, "Apply
what ATH Móvil says" (only a missed completion, through the processor: its signal once).

Run in ``athm shell`` with the admin on (``tests.test_admin_notices.run_with_the_admin``)."""

import pytest

from athm_core.ath.client import FIND_PAYMENT_PATH
from tests.conftest import sample_data
from tests.fake_athm import fake_athm_fixture  # noqa: F401
from tests.test_admin_notices import run_with_the_admin

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC = "pk_admin_NEVER_SHOWN_0a1b2c3d"
COMPLETED = sample_data("ecommerce_completed.production")
APP_PAYMENT = sample_data("payment_received")

SCRIPT = """
import json
from decimal import Decimal
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.test.utils import setup_test_environment
from athm_core import processor
from athm_core.models import Payment, WebhookEvent
from athm_core.payloads import parse_data
from athm_core.signals import payment_completed

setup_test_environment()  # the test client then keeps each response's context
heard = []
payment_completed.connect(lambda sender, payment, **kwargs: heard.append(payment.pk), weak=False)

def deliver(data, **kept):
    return processor.process(parse_data(data), raw_body=json.dumps(data), **kept)

luis = deliver(COMPLETED, request_id="api-gw-1", source_ip="192.0.2.7")
deliver(COMPLETED, request_id="api-gw-2")  # a redelivery: a duplicate, on the same timeline
refund = deliver({**REFUND, "total": "6.00"})
ana = deliver({**APP, "name": "Ana Rivera", "phoneNumber": "(939) 555-0177", "email": "ana@example.org"})
luis, ana = luis.payment, ana.payment
# An open checkout whose completion this database never heard of (ATH says COMPLETED: see the fake).
missed = Payment.objects.create(transaction_type="ecommerce", ecommerce_id=MISSED, total=Decimal("26.00"))
# A checkout ATH Móvil does not know (BTRA_0031).
unknown = Payment.objects.create(
    transaction_type="ecommerce", ecommerce_id="unknown-to-ath", total=Decimal("1.00"), status="cancelled"
)

User.objects.create_superuser("admin", "admin@example.com", "pw")
staff = User.objects.create_user("clerk", "clerk@example.com", "pw", is_staff=True)
staff.user_permissions.add(Permission.objects.get(codename="view_payment"))
admin_client, clerk_client = Client(), Client()
admin_client.login(username="admin", password="pw")
clerk_client.login(username="clerk", password="pw")
url = "/admin/athm_core/payment/"

def found(term, client=admin_client):
    response = client.get(url, {"q": term})
    return sorted(row.pk for row in response.context["cl"].result_list)

def act(client, action, payments):
    data = {"action": action, "_selected_action": [p.pk for p in payments], "index": 0}
    response = client.post(url, data, follow=True)
    return [response.status_code, [(m.level_tag, str(m)) for m in response.context["messages"]]]

result = {"ids": {"luis": luis.pk, "ana": ana.pk, "missed": missed.pk, "unknown": unknown.pk}}
result["search"] = {
    term: found(term)
    for term in ["Luis", "ortiz", "luis@example.com", "example.org", "7875550102", "(939) 555-0177",
                 "939-555-0177", "order-1002", "tienda-sj", COMPLETED["referenceNumber"], MISSED, "nobody"]
}
listing = admin_client.get(url).content.decode()
result["created_filter"] = "created_at__gte" in listing
result["created_today"] = sorted(
    row.pk for row in admin_client.get(url + "?created_at__gte=2000-01-01+00%3A00%3A00%2B00%3A00")
    .context["cl"].result_list
)
result["page"] = admin_client.get(f"{url}{luis.pk}/change/").content.decode()
result["actions_for_admin"] = [
    name for name in ("check_with_ath", "apply_from_ath") if f'value="{name}"' in listing
]
clerk_listing = clerk_client.get(url).content.decode()
result["actions_for_clerk"] = [
    name for name in ("check_with_ath", "apply_from_ath") if f'value="{name}"' in clerk_listing
]
result["check"] = act(clerk_client, "check_with_ath", [luis, ana, missed, unknown])
result["after_check"] = [Payment.objects.get(pk=missed.pk).status, WebhookEvent.objects.count(), list(heard)]
result["clerk_apply"] = act(clerk_client, "apply_from_ath", [missed])
result["apply"] = act(admin_client, "apply_from_ath", [luis, missed, unknown])
result["after_apply"] = [
    Payment.objects.get(pk=missed.pk).status,
    Payment.objects.get(pk=missed.pk).reference_number,
    list(heard),
    WebhookEvent.objects.filter(request_id="find_payment").count(),
]
result["apply_again"] = act(admin_client, "apply_from_ath", [missed])
result["after_again"] = list(heard)
print(json.dumps(result, default=str))
"""


def ath_answers(fake):
    """findPayment: the sample checkout as recorded; the missed one COMPLETED; anything else unknown."""
    from tests.fake_athm import Answer

    def choose(body):
        ecommerce_id = body["ecommerceId"]
        if ecommerce_id not in (COMPLETED["ecommerceId"], MISSED):
            return Answer(400, {"status": "error", "message": "no such id", "errorcode": "BTRA_0031"})
        data = {
            **{key: COMPLETED[key] for key in ("total", "fee", "netAmount", "metadata1", "metadata2")},
            "ecommerceId": ecommerce_id,
            "ecommerceStatus": "COMPLETED",
            "referenceNumber": COMPLETED["referenceNumber"] if ecommerce_id != MISSED else MISSED_REFERENCE,
            "transactionDate": "2026-11-20 14:07:37",
            "totalRefundedAmount": "6.00" if ecommerce_id != MISSED else 0,
        }
        return Answer(200, {"status": "success", "data": data})

    fake.answer_by(FIND_PAYMENT_PATH, choose)


MISSED = "7d1e2f30-0000-4c86-8f0e-1f8a2b7c3d55"
MISSED_REFERENCE = "215070777-402894c185ab1be40185acfe61c20077"
REFUND = {**sample_data("refund_sent.production"), "referenceNumber": COMPLETED["referenceNumber"]}

_OUTCOME: dict = {}


@pytest.fixture
def outcome(child_env, tmp_path, fake_athm) -> dict:
    if not _OUTCOME:
        ath_answers(fake_athm)
        env = {**child_env, **fake_athm.environment(PUBLIC)}
        head = f"COMPLETED = {COMPLETED!r}\nREFUND = {REFUND!r}\nAPP = {APP_PAYMENT!r}\nMISSED = {MISSED!r}\n"
        _OUTCOME.update(run_with_the_admin(head + SCRIPT, env, tmp_path))
    return _OUTCOME


def test_payments_are_found_by_customer_name_phone_and_email_as_well_as_ids_and_metadata(outcome):
    luis, ana, missed = (outcome["ids"][name] for name in ("luis", "ana", "missed"))
    assert outcome["search"] == {
        "Luis": [luis],
        "ortiz": [luis],
        "luis@example.com": [luis],
        "example.org": [ana],
        "7875550102": [luis],
        "(939) 555-0177": [ana],  # stored as digits; found however it is written
        "939-555-0177": [ana],
        "order-1002": [luis],
        "tienda-sj": [luis],
        COMPLETED["referenceNumber"]: [luis],
        MISSED: [missed],
        "nobody": [],
    }


def test_the_list_filters_by_created_at(outcome):
    assert outcome["created_filter"] is True
    assert len(outcome["created_today"]) == 4


def test_a_payment_s_page_shows_its_deliveries_as_a_timeline_and_its_refundable_amount(outcome):
    page = outcome["page"]
    assert "Refundable amount" in page and "20.00" in page  # 26.00 less the refund of 6.00
    assert "Deliveries (webhook events), oldest first" in page
    timeline = page[page.index("athm-timeline") :]
    completed, duplicate, refund = (
        timeline.index("ecommerce.completed: applied"),
        timeline.index("ecommerce.completed: duplicate"),
        timeline.index("refund.sent: applied"),
    )
    assert completed < duplicate < refund
    assert "api-gw-1" in timeline and "192.0.2.7" in timeline
    assert "/admin/athm_core/webhookevent/" in timeline  # each links to its delivery


def test_check_with_ath_gives_a_message_per_payment_and_changes_nothing(outcome):
    luis, ana, missed = (outcome["ids"][name] for name in ("luis", "ana", "missed"))
    assert outcome["actions_for_clerk"] == ["check_with_ath"]  # applying is for superusers
    assert outcome["actions_for_admin"] == ["check_with_ath", "apply_from_ath"]
    status, messages = outcome["check"]
    assert status == 200
    texts = dict((text.split(":")[0], (level, text)) for level, text in messages)
    assert texts[f"payment {luis}"] == ("success", f"payment {luis}: ATH Móvil agrees (COMPLETED)")
    level, text = texts[f"payment {ana}"]
    assert level == "warning" and "no ecommerceId: findPayment knows eCommerce checkouts only" in text
    level, text = texts[f"payment {missed}"]
    assert level == "warning"
    assert "status ATH Móvil COMPLETED, recorded open" in text and "reference number" in text
    assert "a completion this database missed: “Apply what ATH Móvil says” records it" in text
    unknown = outcome["ids"]["unknown"]
    assert texts[f"payment {unknown}"] == (
        "error",
        f"payment {unknown}: ATH Móvil knows no payment with ecommerceId unknown-to-ath (BTRA_0031); "
        "nothing was changed",
    )
    assert outcome["after_check"] == ["open", 4, [luis]]  # 4 deliveries, as before
    assert all(PUBLIC not in text for _, text in messages)


def test_apply_records_only_the_missed_completion_through_the_processor_once(outcome):
    luis, missed = outcome["ids"]["luis"], outcome["ids"]["missed"]
    status, messages = outcome["clerk_apply"]
    assert status == 200 and not any("applied" in text for _, text in messages)  # not offered to a clerk
    status, messages = outcome["apply"]
    texts = dict((text.split(":")[0], (level, text)) for level, text in messages)
    assert (
        texts[f"payment {luis}"][1] == f"payment {luis}: nothing applied: ATH Móvil and this database agree"
    )
    unknown = outcome["ids"]["unknown"]
    assert (
        texts[f"payment {unknown}"][0] == "error"
        and "(BTRA_0031); nothing was changed" in texts[f"payment {unknown}"][1]
    )
    level, text = texts[f"payment {missed}"]
    assert level == "success" and text.startswith(
        f"payment {missed}: applied: payment {missed} recorded completed"
    )
    assert outcome["after_apply"] == ["completed", MISSED_REFERENCE, [luis, missed], 1]
    status, messages = outcome["apply_again"]
    assert messages == [["info", f"payment {missed}: nothing applied: ATH Móvil and this database agree"]]
    assert outcome["after_again"] == [luis, missed]
