"""Notices: each signal a state change sends, kept with the change (athm_core.models.Notice)."""

import django.db.models.deletion
import uuid
from django.db import migrations, models


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
    ]
