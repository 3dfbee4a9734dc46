"""The signals ATH Móvil integrators connect receivers to.

Each fires once per state change, after the transaction that made the change has committed; never for a
redelivered event and never for a simulated one.

- ``payment_completed``, ``payment_cancelled``, ``payment_expired``: sender ``Payment``, argument ``payment``.
- ``refund_sent``: sender ``Refund``, arguments ``refund`` and ``payment``.
- ``payment_received`` (a "pay a business" payment from the app), ``donation_received``: sender
  ``Payment``, argument ``payment``.
"""

from django.dispatch import Signal

payment_completed = Signal()
payment_cancelled = Signal()
payment_expired = Signal()
refund_sent = Signal()
payment_received = Signal()
donation_received = Signal()
