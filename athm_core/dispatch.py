"""Notices to receivers: the signals that announce committed state changes, and what became of each.

The processor decides what to announce (a :class:`Notice` per state change) and calls :func:`announce`
once its transaction has committed. Each notice's signal goes to every connected receiver with
``send_robust``: a receiver that raises does not stop the others and does not undo the change; its failure
is recorded on the webhook event (``WebhookEvent.receiver_errors``) and its exception type is logged (its
text may quote customer data, so it goes to the database only).

A ``receiver_errors`` entry is ``{"signal": "payment_completed", "receiver": "shop.receivers.mark_paid",
"error": <traceback>, "payment_id": 7, "refund_id": 3}`` (``refund_id`` for ``refund_sent`` only), plus
``"attempts"`` and ``"last_attempt_at"`` once a redispatch has tried it again. :func:`missed_notice` and
:func:`send_to_receiver` are what ``athm redispatch`` (:mod:`athm_core.replay`) builds on.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.dispatch import Signal
from django.utils import timezone

from athm_core.events import EventType
from athm_core.models import Payment, Refund, WebhookEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notice:
    """A signal to send once the change it announces has committed: ``signal.send(sender, **arguments)``."""

    kind: EventType
    sender: type
    arguments: dict[str, Any]

    @property
    def signal(self) -> Signal:
        if self.kind.signal is None:
            raise ValueError(f"{self.kind} events are never announced")
        return self.kind.signal


def payment_notice(kind: EventType, payment: Payment) -> Notice:
    """The notice of a payment's new state: ``sender=Payment``, ``payment``."""
    return Notice(kind, Payment, {"payment": payment})


def refund_notice(refund: Refund, payment: Payment) -> Notice:
    """The notice of a refund tied to its payment: ``refund_sent``, ``sender=Refund``, ``refund``,
    ``payment``."""
    return Notice(EventType.REFUND_SENT, Refund, {"refund": refund, "payment": payment})


def announce(record: WebhookEvent, notices: list[Notice]) -> None:
    """Send each notice's signal to its receivers, recording on ``record`` each receiver that raised."""
    failures = []
    for notice in notices:
        for receiver, response in notice.signal.send_robust(sender=notice.sender, **notice.arguments):
            if isinstance(response, Exception):
                name = receiver_name(receiver)
                # The exception's text may quote customer data: the log gets its type, the database the rest.
                log.error(
                    "receiver %s raised %s on %s for webhook event %s",
                    name,
                    type(response).__name__,
                    notice.kind.signal_name,
                    record.pk,
                )
                failures.append(
                    {
                        "signal": notice.kind.signal_name,
                        "receiver": name,
                        "error": _traceback(response),
                        # Which rows the signal named, so that a redispatch sends the same notice again.
                        **_row_ids(notice),
                    }
                )
    if failures:
        record.receiver_errors = [*record.receiver_errors, *failures]
        WebhookEvent.objects.filter(pk=record.pk).update(receiver_errors=record.receiver_errors)


def receiver_name(receiver: Any) -> str:
    """How a receiver is named in ``WebhookEvent.receiver_errors``: ``module.qualname``."""
    return f"{getattr(receiver, '__module__', '?')}.{getattr(receiver, '__qualname__', receiver)}"


def failed_again(failure: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """The ``receiver_errors`` entry ``failure`` after its receiver raised ``error`` on another attempt."""
    return {
        **failure,
        "error": _traceback(error),
        "attempts": int(failure.get("attempts", 1)) + 1,
        "last_attempt_at": timezone.now().isoformat(),
    }


# --- one missed notice to one receiver (redispatch) -------------------------------------------------------


class ReceiverNotConnected(LookupError):
    """No live receiver of the signal has the recorded name (its module was not imported, or it is gone)."""


def missed_notice(record: WebhookEvent, failure: dict[str, Any]) -> Notice | None:
    """The notice a failed receiver missed, rebuilt from the rows as they are now; ``None`` if they are gone.

    The rows are read afresh, so a receiver hears of the payment as it is now (a later refund included),
    exactly as it would from a signal sent today. Entries recorded before the row ids were kept fall back to
    the event's own payment and refund.
    """
    kind = EventType.for_signal_name(str(failure.get("signal", "")))
    if kind is None:
        return None
    if kind == EventType.REFUND_SENT:
        refund_id = failure.get("refund_id", record.refund_id)
        refund = Refund.objects.select_related("payment").filter(pk=refund_id).first() if refund_id else None
        if refund is None or refund.payment is None:
            return None
        return refund_notice(refund, refund.payment)
    payment_id = failure.get("payment_id", record.payment_id)
    payment = Payment.objects.filter(pk=payment_id).first() if payment_id else None
    return payment_notice(kind, payment) if payment else None


def send_to_receiver(notice: Notice, name: str) -> None:
    """Send ``notice``'s signal to its live receiver named ``name`` only. A receiver's exception propagates.

    Raises :class:`ReceiverNotConnected` when no receiver has that name.
    """
    for receiver, is_async in live_receivers(notice.signal, notice.sender):
        if receiver_name(receiver) == name:
            call = async_to_sync(receiver) if is_async else receiver
            call(signal=notice.signal, sender=notice.sender, **notice.arguments)
            return
    raise ReceiverNotConnected(f"no receiver {name} is connected to {notice.kind.signal_name}")


def live_receivers(signal: Signal, sender: type) -> list[tuple[Callable[..., Any], bool]]:
    """The receivers ``signal.send(sender)`` would call, each with whether it is a coroutine function.

    Django has no public way to call one receiver of a signal. This is the project's one use of its private
    API: ``Signal._live_receivers(sender)``, which ``send()`` itself uses, returning ``(sync receivers,
    async receivers)`` with weak references resolved and dead ones dropped. Read in Django 5.0, 5.1 and
    5.2's source (the tuple came with 5.0; 4.2 returned one list), and pinned by
    ``tests/test_dispatch.py``.
    """
    sync_receivers, async_receivers = signal._live_receivers(sender)
    return [(receiver, False) for receiver in sync_receivers] + [
        (receiver, True) for receiver in async_receivers
    ]


def _row_ids(notice: Notice) -> dict[str, int]:
    ids = {}
    for key in ("payment", "refund"):
        row = notice.arguments.get(key)
        if row is not None and row.pk is not None:
            ids[f"{key}_id"] = row.pk
    return ids


def _traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))
