"""One name per kind of event: the enum in athm_core.events is the only list, and every name the outside
world uses (signal, SNS type, ATH Móvil's subscription flag) is an attribute of its member."""

import json

import pytest
from django.dispatch import Signal

from athm_core import processor, signals
from athm_core.ath import client
from athm_core.events import EventType, Identity
from athm_core.payloads import _EVENT_TYPES
from tests.conftest import SCHEMA_PATH, SIGNAL_NAMES

ANNOUNCED = [kind for kind in EventType if kind.signal is not None]

# ATH Móvil's subscription request (its webhook API): one boolean per event.
ATH_SUBSCRIPTION_FLAGS = {
    "ecommercePaymentReceivedEvent",
    "ecommercePaymentCancelledEvent",
    "ecommercePaymentExpiredEvent",
    "refundSentEvent",
    "paymentReceivedEvent",
    "donationReceivedEvent",
}


def test_each_signal_of_the_contract_announces_one_kind_and_is_the_module_s_own_object():
    assert [kind.signal_name for kind in ANNOUNCED] == SIGNAL_NAMES
    for kind in ANNOUNCED:
        assert isinstance(kind.signal, Signal)
        assert getattr(signals, kind.signal_name) is kind.signal
        # The SNS type is the signal's name (docs/events.md); receiver_errors name it the same way.
        assert kind.sns_type == kind.signal_name
        assert EventType.for_signal_name(kind.signal_name) is kind
    assert EventType.SIMULATED.signal is None and EventType.SIMULATED.signal_name == ""
    assert EventType.for_signal_name("simulated") is None and EventType.for_signal_name("nope") is None


def test_the_subscriptions_are_ath_s_six_flags_named_after_the_kinds():
    assert {kind.subscription_flag for kind in EventType.subscribable()} == ATH_SUBSCRIPTION_FLAGS
    assert client.WEBHOOK_EVENTS == {
        "ecommerce_completed": "ecommercePaymentReceivedEvent",
        "ecommerce_cancelled": "ecommercePaymentCancelledEvent",
        "ecommerce_expired": "ecommercePaymentExpiredEvent",
        "refund_sent": "refundSentEvent",
        "payment_received": "paymentReceivedEvent",
        "donation_received": "donationReceivedEvent",
    }


def test_identity_ecommerce_and_money_are_properties_of_the_kind():
    assert {kind: kind.identity for kind in EventType} == {
        EventType.ECOMMERCE_COMPLETED: Identity.CHECKOUT,
        EventType.ECOMMERCE_CANCELLED: Identity.CHECKOUT,
        EventType.ECOMMERCE_EXPIRED: Identity.CHECKOUT,
        EventType.REFUND_SENT: Identity.TRANSACTION,
        EventType.PAYMENT_RECEIVED: Identity.REFERENCE,
        EventType.DONATION_RECEIVED: Identity.REFERENCE,
        EventType.SIMULATED: Identity.TRANSACTION,
    }
    assert {kind for kind in EventType if kind.is_ecommerce} == {
        EventType.ECOMMERCE_COMPLETED,
        EventType.ECOMMERCE_CANCELLED,
        EventType.ECOMMERCE_EXPIRED,
    }
    assert {kind for kind in EventType if kind.moves_money} == {
        EventType.ECOMMERCE_COMPLETED,
        EventType.REFUND_SENT,
        EventType.PAYMENT_RECEIVED,
        EventType.DONATION_RECEIVED,
    }


def test_the_message_schema_names_every_sns_type():
    # Consumers validate against the schema: a kind announced without it would fail their validation.
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["properties"]["type"]["enum"] == [kind.sns_type for kind in ANNOUNCED]


@pytest.mark.parametrize("kind", list(EventType))
def test_every_kind_has_a_normalizer_case_and_a_transition(kind):
    assert kind in _EVENT_TYPES.values()
    assert kind in processor._TRANSITIONS


def test_the_stored_names_are_the_ones_already_in_merchants_databases():
    # WebhookEvent.event_type and the webhook's answer hold these values: renaming one needs a migration.
    assert [kind.value for kind in EventType] == [
        "ecommerce.completed",
        "ecommerce.cancelled",
        "ecommerce.expired",
        "refund.sent",
        "payment.received",
        "donation.received",
        "simulated",
    ]
