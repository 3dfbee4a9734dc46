"""Dispatch's one use of Django's private API (``Signal._live_receivers``), pinned: which receivers it
returns for a sender, sync and async, with dead weak references dropped; how receivers are named on a
notice, and delivering one to sync and async receivers."""

import functools
import gc

import django
import pytest

from athm_core import dispatch
from athm_core.dispatch import payment_notice
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


def test_connected_receivers_are_named_in_order_and_told_apart(receivers):
    def twin_of(n):
        return lambda sender, **kwargs: calls.append(("twin", n))

    twins = [twin_of(1), twin_of(2)]
    for twin in twins:
        payment_completed.connect(twin, sender=Payment)
    try:
        names = [name for name, _, _ in dispatch.connected_receivers(payment_completed, Payment)]
    finally:
        for twin in twins:
            payment_completed.disconnect(twin, sender=Payment)
    test = "tests.test_dispatch.test_connected_receivers_are_named_in_order_and_told_apart"
    twin = f"{test}.<locals>.twin_of.<locals>.<lambda>"
    assert names == [
        "tests.test_dispatch.on_any_sender",
        "tests.test_dispatch.on_payments",
        twin,
        f"{twin}#2",
        "tests.test_dispatch.on_payments_async",
    ]


def test_a_notice_lists_the_receivers_connected_when_it_is_written(receivers):
    notice = payment_notice(EventType.ECOMMERCE_COMPLETED, Payment(total=1))
    assert notice.signal == "payment_completed" and notice.delivered_at is None
    assert [entry["receiver"] for entry in notice.receivers] == [
        "tests.test_dispatch.on_any_sender",
        "tests.test_dispatch.on_payments",
        "tests.test_dispatch.on_payments_async",
    ]
    assert {entry["state"] for entry in notice.receivers} == {"pending"}


def test_a_notice_nobody_listens_to_is_delivered_when_written():
    notice = payment_notice(EventType.PAYMENT_RECEIVED, Payment(total=1))
    assert notice.receivers == [] and notice.delivered_at is not None


@pytest.mark.django_db(transaction=True)
def test_delivering_calls_sync_and_async_receivers_with_the_notice_id(receivers):
    payment = Payment.objects.create(transaction_type="ecommerce", status="completed", total=1)
    notice = payment_notice(EventType.ECOMMERCE_COMPLETED, payment)
    notice.save()
    report = dispatch.deliver([notice])
    assert calls == [("any", Payment), ("payments", Payment), ("async", Payment)]
    assert report.delivered == 1 and report.failed == 0
    notice.refresh_from_db()
    assert notice.delivered_at is not None
    assert [entry["state"] for entry in notice.receivers] == ["delivered"] * 3
    # Delivered: never again.
    assert dispatch.deliver_ids([notice.pk]).calls == []
    assert len(calls) == 3


class Notifier:
    def __call__(self, sender, **kwargs):
        calls.append(("object", sender))


def on_tagged(sender, tag, **kwargs):
    calls.append((tag, sender))


def test_partials_and_callable_objects_have_names_that_hold_across_processes():
    # Never a repr: it holds a memory address (and a partial's arguments, which may be credentials).
    assert dispatch.receiver_name(functools.partial(on_tagged, tag="api-key-123")) == (
        "tests.test_dispatch.on_tagged(partial)"
    )
    assert dispatch.receiver_name(Notifier()) == "tests.test_dispatch.Notifier"
    assert dispatch.receiver_name(Notifier().__call__) == "tests.test_dispatch.Notifier.__call__"
