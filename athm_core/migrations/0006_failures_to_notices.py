"""Receiver failures kept on webhook events (``receiver_errors``) become notices (athm_core.models.Notice).

Apart from 0005 (the table) and 0007 (the old column): on MySQL and MariaDB a migration's DDL is not undone
when it fails, so each step must be safe to run again on its own. This one is: an event whose failures are
already notices is skipped.
"""

import uuid

from django.db import migrations
from django.utils import timezone


def failures_to_notices(apps, schema_editor):
    """Each receiver failure kept on an event becomes a notice for that receiver alone: pending and due now
    (the relay calls the receiver again), unless the event's body was purged already, past the retention
    period: such a failure is kept as ``forgotten`` (given up, for the record) instead of replayed."""
    WebhookEvent = apps.get_model("athm_core", "WebhookEvent")
    Notice = apps.get_model("athm_core", "Notice")
    Payment = apps.get_model("athm_core", "Payment")
    Refund = apps.get_model("athm_core", "Refund")
    now = timezone.now()
    done = set(Notice.objects.exclude(webhook_event=None).values_list("webhook_event", flat=True))
    # Only the columns needed: MySQL's driver holds a whole result in memory, raw bodies would not fit.
    events = WebhookEvent.objects.only("id", "payment_id", "refund_id", "received_at", "purged_at", "receiver_errors")
    for event in events.order_by("id").iterator(chunk_size=2000):
        if not event.receiver_errors or event.pk in done:
            continue
        for failure in event.receiver_errors:
            if not isinstance(failure, dict):
                continue
            refund_id = failure.get("refund_id", event.refund_id) if failure.get("signal") == "refund_sent" else None
            payment_id = failure.get("payment_id", event.payment_id)
            if refund_id is not None and not payment_id:
                payment_id = Refund.objects.filter(pk=refund_id).values_list("payment_id", flat=True).first()
            if not payment_id or not Payment.objects.filter(pk=payment_id).exists():
                continue  # the rows it named are gone: nothing can be delivered
            if refund_id is not None and not Refund.objects.filter(pk=refund_id).exists():
                continue
            purged = event.purged_at is not None
            attempts = int(failure.get("attempts", 1))
            Notice.objects.create(
                notice_id=uuid.uuid4(),
                signal=str(failure.get("signal", ""))[:32],
                payment_id=payment_id,
                refund_id=refund_id,
                webhook_event=event,
                receivers=[
                    {
                        "receiver": str(failure.get("receiver", "")),
                        "state": "forgotten" if purged else "failed",
                        "attempts": attempts,
                        "last_attempt_at": failure.get("last_attempt_at") or event.received_at.isoformat(),
                        "error": str(failure.get("error", "")),
                    }
                ],
                # Written now: the age alarm measures how long a notice has waited since this upgrade.
                created_at=now,
                next_attempt_at=now,
                attempts=attempts,
                delivered_at=now if purged else None,
            )


class Migration(migrations.Migration):

    dependencies = [
        ('athm_core', '0005_notices'),
    ]

    operations = [
        migrations.RunPython(failures_to_notices, migrations.RunPython.noop),
    ]
