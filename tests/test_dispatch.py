"""Dispatch's one use of Django's private API (``Signal._live_receivers``), pinned: which receivers it
returns for a sender, sync and async, with dead weak references dropped; and calling one receiver by name."""

import gc
import re

import django
import pytest

from athm_core import dispatch
from athm_core.dispatch import ReceiverNotConnected, payment_notice
from athm_core.events import EventType
from athm_core.models import Payment, Refund
from athm_core.signals import payment_completed

# The Django versions whose Signal._live_receivers was read (athm_core.dispatch.live_receivers).
CHECKED_DJANGO_VERSIONS = {(5, 0), (5, 1), (5, 2)}


def test_this_django_is_one_whose_private_dispatcher_api_was_checked():
    assert django.VERSION[:2] in CHECKED_DJANGO_VERSIONS, (
        f"Django {django.get_version()}: read Signal._live_receivers in its source, adjust "
        "athm_core.dispatch.live_receivers if it changed, and add the version here"
    )


calls: list[tuple[str, object]] = []


def on_any_sender(sender, **kwargs):
    calls.append(("any", sender))


def on_payments(sender, **kwargs):
    calls.append(("payments", sender))


def on_refunds(sender, **kwargs):
    calls.append(("refunds", sender))


async def on_payments_async(sender, **kwargs):
    calls.append(("async", sender))


@pytest.fixture
def receivers():
    def doomed(sender, **kwargs):  # weakly connected, then garbage: a dead receiver
        calls.append(("dead", sender))

    calls.clear()
    payment_completed.connect(on_any_sender)
    payment_completed.connect(on_payments, sender=Payment)
    payment_completed.connect(on_refunds, sender=Refund)
    payment_completed.connect(on_payments_async, sender=Payment)
    payment_completed.connect(doomed, sender=Payment)
    del doomed
    gc.collect()
    yield
    for receiver in (on_any_sender, on_payments, on_refunds, on_payments_async):
        payment_completed.disconnect(receiver, sender=None)
        payment_completed.disconnect(receiver, sender=Payment)
        payment_completed.disconnect(receiver, sender=Refund)


def test_live_receivers_are_those_send_would_call_each_with_whether_it_is_async(receivers):
    live = dispatch.live_receivers(payment_completed, Payment)
    assert sorted((receiver.__name__, is_async) for receiver, is_async in live) == [
        ("on_any_sender", False),
        ("on_payments", False),
        ("on_payments_async", True),
    ]
    assert [receiver.__name__ for receiver, _ in dispatch.live_receivers(payment_completed, Refund)] == [
        "on_any_sender",
        "on_refunds",
    ]


def test_send_to_receiver_calls_the_named_receiver_only_sync_or_async(receivers):
    notice = payment_notice(EventType.ECOMMERCE_COMPLETED, Payment(total=1))
    dispatch.send_to_receiver(notice, "tests.test_dispatch.on_payments")
    dispatch.send_to_receiver(notice, "tests.test_dispatch.on_payments_async")
    assert calls == [("payments", Payment), ("async", Payment)]
    with pytest.raises(ReceiverNotConnected, match=re.escape("no receiver tests.test_dispatch.on_refunds")):
        dispatch.send_to_receiver(notice, "tests.test_dispatch.on_refunds")  # connected for Refund only


def test_a_notice_carries_its_signal_object():
    notice = payment_notice(EventType.ECOMMERCE_COMPLETED, Payment(total=1))
    assert notice.signal is payment_completed and notice.sender is Payment
