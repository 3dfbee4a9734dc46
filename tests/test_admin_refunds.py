"""The payments' admin action "Refund through ATH Móvil": a confirmation page that shows what each payment
can still be refunded (pending refunds counted) before anything is sent; then athm_core.refunds.refund,
with each result said; superusers only. Django's test client in ``athm shell`` with the admin on (like
tests/test_admin_notices.py), against the fake ATH Móvil on 127.0.0.1 in this process."""

from __future__ import annotations

import pytest

from tests.fake_athm import FakeAthm
from tests.test_admin_notices import run_with_the_admin

pytestmark = pytest.mark.django_db(transaction=True)

REFUND_PATH = "/api/business-transaction/ecommerce/refund"
PRIVATE = "priv-NEVER-PRINTED-admin-5e4d3c2b1a"

SCRIPT = """
import json
from decimal import Decimal
from django.contrib.auth.models import User
from django.test import Client
from django.test.utils import setup_test_environment
from athm_core.models import Payment, Refund
from athm_core.signals import refund_sent

setup_test_environment()
sent = []
refund_sent.connect(lambda sender, refund, payment, **kwargs: sent.append(refund.pk), weak=False)

def paid(number, total):
    return Payment.objects.create(
        transaction_type="ecommerce", status="completed", reference_number=f"215070{number}-admin",
        total=Decimal(total),
    )

first, second = paid(1, "26.00"), paid(2, "10.00")
open_one = Payment.objects.create(transaction_type="ecommerce", status="open", ecommerce_id="open-1",
                                  total=Decimal("3.00"))
# A refund of the first left pending (ATH did not answer): counted against what is refundable.
Refund.objects.create(payment=first, reference_number=first.reference_number, amount=Decimal("6.00"),
                      transaction_date=first.created_at, idempotency_key="requested:earlier",
                      status="pending", requested_at=first.created_at)
User.objects.create_superuser("admin", "admin@example.com", "pw")
User.objects.create_user("clerk", "clerk@example.com", "pw", is_staff=True)
url = "/admin/athm_core/payment/"
result = {}

clerk = Client()
clerk.login(username="clerk", password="pw")
from django.contrib.auth.models import Permission
User.objects.get(username="clerk").user_permissions.add(Permission.objects.get(codename="view_payment"))
page = clerk.get(url)
result["clerk_list"] = [page.status_code, "refund_selected" in page.content.decode()]
page = clerk.post(url, {"action": "refund_selected", "_selected_action": [first.pk], "post": "yes"})
result["clerk_post"] = page.status_code

client = Client()
client.login(username="admin", password="pw")
result["admin_list_has_action"] = "refund_selected" in client.get(url).content.decode()
page = client.post(url, {"action": "refund_selected", "_selected_action": [first.pk, second.pk]})
result["confirm"] = [page.status_code, page.content.decode()]
result["refunds_after_confirm_page"] = Refund.objects.count()

# What the confirmation page carries: how many refunds each payment had when it was shown.
result["seen_fields"] = [f'name="refunds_seen_{p.pk}" value="{n}"' in result["confirm"][1]
                         for p, n in ((first, 1), (second, 0))]
page = client.post(url, {"action": "refund_selected", "_selected_action": [first.pk], "post": "yes",
                         f"refunds_seen_{first.pk}": "1", "amount": "1.00", "message": "sorry"}, follow=True)
result["while_pending"] = [str(m) for m in page.context["messages"]]
page = client.post(url, {"action": "refund_selected", "_selected_action": [second.pk], "post": "yes",
                         f"refunds_seen_{second.pk}": "0", "amount": "10.01", "message": "sorry"},
                   follow=True)
result["too_much"] = [str(m) for m in page.context["messages"]]
page = client.post(url, {"action": "refund_selected", "_selected_action": [second.pk], "post": "yes",
                         "amount": "5.00", "message": "sorry"}, follow=True)
result["not_from_the_page"] = [str(m) for m in page.context["messages"]]
confirmed = {"action": "refund_selected", "_selected_action": [second.pk], "post": "yes",
             f"refunds_seen_{second.pk}": "0", "amount": "5.00", "message": "sorry"}
page = client.post(url, confirmed, follow=True)
result["made"] = [str(m) for m in page.context["messages"]]
page = client.post(url, confirmed, follow=True)  # the same page sent again: a double click
result["sent_twice"] = [str(m) for m in page.context["messages"]]
page = client.post(url, {"action": "refund_selected", "_selected_action": [open_one.pk], "post": "yes",
                         f"refunds_seen_{open_one.pk}": "0"}, follow=True)
result["open"] = [str(m) for m in page.context["messages"]]
pending = Refund.objects.get(status="pending")
page = client.post("/admin/athm_core/refund/", {"action": "check_pending", "_selected_action": [pending.pk]},
                   follow=True)
result["checked"] = [str(m) for m in page.context["messages"]]
result["refund_list"] = client.get("/admin/athm_core/refund/").content.decode()
result["refunds"] = sorted(
    [str(r.amount), r.status, r.payment_id == first.pk] for r in Refund.objects.all()
)
second.refresh_from_db()
result["second_refunded"] = str(second.total_refunded_amount)
result["second_anomalies"] = second.anomalies
result["sent"] = len(sent)
print(json.dumps(result, default=str))
"""


@pytest.fixture
def outcome(child_env, tmp_path) -> tuple[dict, FakeAthm]:
    fake = FakeAthm().start()
    try:
        fake.answer(
            REFUND_PATH,
            200,
            {
                "status": "success",
                "data": {
                    "refund": {"referenceNumber": "215070999-admin-refund", "refundedAmount": "5.00"},
                    "originalTransaction": {"referenceNumber": "2150702-admin"},
                },
            },
        )
        fake.answer("/transactions/v4/transactionReport", 200, [])  # it lists no refund
        env = {**child_env, **fake.environment("pub-admin", PRIVATE)}
        return run_with_the_admin(SCRIPT, env, tmp_path), fake
    finally:
        fake.close()


def test_the_refund_action(outcome):
    result, fake = outcome
    # Superusers only: a staff user who may view payments neither sees nor runs it.
    assert result["clerk_list"] == [200, False]
    assert result["admin_list_has_action"] is True
    # The confirmation page shows what is refundable, pending counted, and sends nothing.
    status, page = result["confirm"]
    assert status == 200
    assert "Refund through ATH Móvil" in page and 'name="post" value="yes"' in page
    assert '<td class="money refundable">20.00<br><small' in page  # 26.00 less 6.00 pending
    assert "is pending at ATH Móvil: no other refund of this payment until it is settled" in page
    assert '<td class="money refundable">10.00</td>' in page
    assert result["refunds_after_confirm_page"] == 1
    # One refund of a payment at a time while ATH has not answered; then refused with why, then made.
    assert any("not refunded: refund" in m and "is still pending" in m for m in result["while_pending"])
    assert any("not refunded: 10.01 is more than the 10.00 still refundable" in m for m in result["too_much"])
    assert any("refunded 5.00" in m and "215070999-admin-refund" in m for m in result["made"])
    # One confirmation page refunds once: sent again, or not from the page, it sends nothing.
    assert result["seen_fields"] == [True, True]
    assert any("changed since the confirmation page" in m for m in result["sent_twice"])
    assert any("changed since the confirmation page" in m for m in result["not_from_the_page"])
    assert any("only a completed payment can be refunded" in m for m in result["open"])
    requests = fake.requests_to(REFUND_PATH)
    assert [r.json["amount"] for r in requests] == ["5.00"]
    assert requests[0].json["message"] == "sorry"
    assert result["refunds"] == [["5.00", "completed", False], ["6.00", "pending", True]]
    assert result["second_refunded"] == "5.00"
    assert result["second_anomalies"] == []
    # The pending refund, checked from the refunds' list (which shows ids and ATH's refund numbers).
    assert any("stays pending" in m for m in result["checked"]), result["checked"]
    assert "215070999-admin-refund" in result["refund_list"]
    assert result["sent"] == 1
    assert all(PRIVATE not in message for message in result["made"] + result["too_much"])
