"""One row per receiver call that returned: what the tests count to prove "each receiver handled each state
change exactly once".

No unique constraint, on purpose: a receiver called twice for the same notice leaves two rows, and the
test sees it. A row is written inside the receiver's call, so it commits with the receiver's ``delivered``
state (:mod:`athm_core.dispatch` runs each receiver in a savepoint of the transaction that records it).
"""

from django.db import models


class Heard(models.Model):
    # The signal's name in athm_core.signals, e.g. "payment_completed".
    signal = models.CharField(max_length=32)
    # The receiver's short name in tests.heard.receivers: "count", "exit_once", "kill_session_once" ...
    receiver = models.CharField(max_length=64)
    # The notice_id the receiver was given. Empty only when the caller gives none (code without notices).
    notice_id = models.UUIDField(null=True, blank=True)
    payment_id = models.BigIntegerField()
    refund_id = models.BigIntegerField(null=True, blank=True)
    # The process that handled it: which container, the webhook's or the relay's.
    pid = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.receiver} heard {self.signal} of payment {self.payment_id} (pid {self.pid})"
