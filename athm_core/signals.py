"""The signals ATH Móvil integrators connect receivers to.

- ``payment_completed``, ``payment_cancelled``, ``payment_expired``: sender ``Payment``, argument ``payment``.
- ``refund_sent``: sender ``Refund``, arguments ``refund`` and ``payment``.
- ``payment_received`` (a "pay a business" payment from the app), ``donation_received``: sender
  ``Payment``, argument ``payment``.

Every receiver also gets ``notice_id``: the UUID of the notice that announces the change
(:class:`~athm_core.models.Notice`), the same for each receiver of that signal and the ``id`` of the SNS
message for the change; a receiver that acts outside the database deduplicates on it.

The guarantee: each receiver hears of each state change at least once, and in practice once, after the
transaction that made the change (and wrote its notices) has committed; never for a simulated event, and a
redelivered event never announces its change again. The signals are not sent with ``send()``:
:mod:`athm_core.dispatch` calls their receivers one at a time, each in a transaction that records its result
on the notice. A receiver that returned is never called again for that notice, unless the process dies
between its return and that commit; its own database writes commit with that record. One that raises is
rolled back, its traceback kept on the notice, and called again later: by a redelivery of the same event,
by the relay (with a backoff) or by ``athm redispatch``. Receivers connected to a signal after a change was
written are not called for that change.
"""

from django.dispatch import Signal

payment_completed = Signal()
payment_cancelled = Signal()
payment_expired = Signal()
refund_sent = Signal()
payment_received = Signal()
donation_received = Signal()
