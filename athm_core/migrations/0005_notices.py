"""Notices: each signal a state change sends, kept with the change (athm_core.models.Notice)."""

import django.db.models.deletion
import uuid
from django.db import migrations, models
from django.utils import timezone


def failures_to_notices(apps, schema_editor):
    """Each receiver failure kept on an event (``receiver_errors``) becomes a pending notice for that
    receiver alone, so that the relay and ``athm redispatch`` deliver it like any other."""
    WebhookEvent = apps.get_model("athm_core", "WebhookEvent")
    Notice = apps.get_model("athm_core", "Notice")
    Payment = apps.get_model("athm_core", "Payment")
    Refund = apps.get_model("athm_core", "Refund")
    now = timezone.now()
    for event in WebhookEvent.objects.iterator():
        for failure in event.receiver_errors or []:
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
            Notice.objects.create(
                notice_id=uuid.uuid4(),
                signal=str(failure.get("signal", ""))[:32],
                payment_id=payment_id,
                refund_id=refund_id,
                webhook_event=event,
                receivers=[
                    {
                        "receiver": str(failure.get("receiver", "")),
                        "state": "failed",
                        "attempts": int(failure.get("attempts", 1)),
                        "last_attempt_at": failure.get("last_attempt_at") or event.received_at.isoformat(),
                        "error": str(failure.get("error", "")),
                    }
                ],
                created_at=event.received_at,
                next_attempt_at=now,
                attempts=int(failure.get("attempts", 1)),
            )


class Migration(migrations.Migration):

    dependencies = [
        ('athm_core', '0004_webhookevent_rejected'),
    ]

    operations = [
        migrations.CreateModel(
            name='Notice',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('notice_id', models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                ('signal', models.CharField(max_length=32)),
                ('receivers', models.JSONField(blank=True, default=list)),
                ('created_at', models.DateTimeField()),
                ('next_attempt_at', models.DateTimeField()),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('delivered_at', models.DateTimeField(blank=True, null=True)),
                ('payment', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='notices', to='athm_core.payment')),
                ('refund', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='notices', to='athm_core.refund')),
                ('webhook_event', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='notices', to='athm_core.webhookevent')),
            ],
            options={
                'ordering': ['id'],
                'indexes': [models.Index(fields=['delivered_at', 'id'], name='athm_notice_pending_idx')],
            },
        ),
        migrations.RunPython(failures_to_notices, migrations.RunPython.noop),
    ]
