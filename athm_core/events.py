"""The kinds of ATH Móvil event, each defined once, with every name it goes by.

An :class:`EventType` member is the kind's one name inside the project (stored in
``WebhookEvent.event_type``, answered by the webhook, e.g. ``"ecommerce.completed"``). The member also
knows what the outside calls it:

- ``signal``: the :mod:`athm_core.signals` signal that announces it to receivers; ``signal_name`` is that
  signal's name in the module (``"payment_completed"``), which is also the SNS message type (``sns_type``,
  see ``docs/events.md``) and the ``signal`` of a :class:`~athm_core.models.Notice`;
- ``subscription_flag``: the boolean field of ATH Móvil's webhook subscription request that subscribes to
  it (``"ecommercePaymentReceivedEvent"``), and ``subscription_name``, how ``athm register_webhook
  --events`` names it (the type with ``_`` for ``.``: ``ecommerce_completed``);
- ``identity``: what tells one event of the kind from another (its idempotency key), and so where its row
  is found: a checkout's ``ecommerceId``, a transaction's reference number, or a whole transaction;
- ``is_ecommerce``: an eCommerce checkout (keyed by ``ecommerceId``; findPayment can confirm it);
- ``moves_money``: money reached or left the business (what reconciliation creates when a webhook is lost).

A new kind of event is this enum's member, the normalizer's case in :mod:`athm_core.payloads` and its
transition in :mod:`athm_core.processor` (and its signal in :mod:`athm_core.signals`, if it has a new one).
Nothing here touches the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from django.dispatch import Signal

from athm_core import signals

# A signal's name is its name in athm_core.signals, written nowhere else.
_SIGNAL_NAMES = {signal: name for name, signal in vars(signals).items() if isinstance(signal, Signal)}


class Identity(StrEnum):
    """What tells one event of a kind from another: the parts of its idempotency key."""

    # The checkout's ecommerceId: one event per kind and checkout (completed, cancelled, expired).
    CHECKOUT = "checkout"
    # The reference number: one event per transaction (an app payment, a donation).
    REFERENCE = "reference"
    # Reference number, daily transaction id, date and amount: refunds may share a reference number.
    TRANSACTION = "transaction"


@dataclass(frozen=True)
class _Kind:
    value: str
    signal: Signal | None = None
    subscription_flag: str = ""
    identity: Identity = Identity.TRANSACTION
    moves_money: bool = False


class EventType(StrEnum):
    """One kind of ATH Móvil event. The value is the project's name for it (``"refund.sent"``)."""

    signal: Signal | None
    subscription_flag: str
    identity: Identity
    moves_money: bool

    def __new__(cls, kind: _Kind) -> EventType:
        member = str.__new__(cls, kind.value)
        member._value_ = kind.value
        member.signal = kind.signal
        member.subscription_flag = kind.subscription_flag
        member.identity = kind.identity
        member.moves_money = kind.moves_money
        return member

    ECOMMERCE_COMPLETED = _Kind(
        "ecommerce.completed",
        signals.payment_completed,
        "ecommercePaymentReceivedEvent",
        identity=Identity.CHECKOUT,
        moves_money=True,
    )
    ECOMMERCE_CANCELLED = _Kind(
        "ecommerce.cancelled",
        signals.payment_cancelled,
        "ecommercePaymentCancelledEvent",
        identity=Identity.CHECKOUT,
    )
    ECOMMERCE_EXPIRED = _Kind(
        "ecommerce.expired",
        signals.payment_expired,
        "ecommercePaymentExpiredEvent",
        identity=Identity.CHECKOUT,
    )
    REFUND_SENT = _Kind("refund.sent", signals.refund_sent, "refundSentEvent", moves_money=True)
    PAYMENT_RECEIVED = _Kind(
        "payment.received",
        signals.payment_received,
        "paymentReceivedEvent",
        identity=Identity.REFERENCE,
        moves_money=True,
    )
    DONATION_RECEIVED = _Kind(
        "donation.received",
        signals.donation_received,
        "donationReceivedEvent",
        identity=Identity.REFERENCE,
        moves_money=True,
    )
    # The ATH Business app's "test webhook" button: recorded, never a business row, never announced.
    SIMULATED = _Kind("simulated")

    @property
    def signal_name(self) -> str:
        """The signal's name in :mod:`athm_core.signals` (``""`` for a kind that is never announced)."""
        return _SIGNAL_NAMES[self.signal] if self.signal is not None else ""

    @property
    def is_ecommerce(self) -> bool:
        """An eCommerce checkout's event: keyed by ``ecommerceId``, which findPayment can look up."""
        return self.identity == Identity.CHECKOUT

    @property
    def sns_type(self) -> str:
        """The ``type`` of this kind's SNS message: the signal's name, by design (``docs/events.md``)."""
        return self.signal_name

    @property
    def subscription_name(self) -> str:
        """How ``athm register_webhook --events`` names this kind: ``ecommerce_completed``."""
        return self.value.replace(".", "_")

    @classmethod
    def subscribable(cls) -> list[EventType]:
        """The kinds a webhook listener can subscribe to at ATH Móvil, in ATH Móvil's order."""
        return [kind for kind in cls if kind.subscription_flag]

    @classmethod
    def for_signal_name(cls, name: str) -> EventType | None:
        """The kind announced by the signal called ``name`` (as stored on a notice), or ``None``.

        ``payment_completed`` and the other payment signals each announce one kind; ``refund_sent`` too.
        """
        return next((kind for kind in cls if kind.signal is not None and kind.signal_name == name), None)
