"""Refunds this system asks ATH Móvil for: their status (pending, completed, failed), when they were asked
for, the reference numbers ATH's answer gives (the refund's own, the original transaction's) and why one
failed. Refunds recorded before are completed."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('athm_core', '0013_webhookevent_not_confirmed_at'),
    ]

    operations = [
        migrations.AddField(
            model_name='refund',
            name='error',
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name='refund',
            name='original_reference_number',
            field=models.CharField(blank=True, max_length=100),
        ),
        migrations.AddField(
            model_name='refund',
            name='refund_reference_number',
            field=models.CharField(blank=True, max_length=100),
        ),
        migrations.AddField(
            model_name='refund',
            name='requested_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='refund',
            name='status',
            field=models.CharField(choices=[('pending', 'Pending (asked of ATH Móvil, no answer yet)'), ('completed', 'Completed'), ('failed', 'Failed (ATH Móvil refused it)')], default='completed', max_length=16),
        ),
        migrations.AddIndex(
            model_name='refund',
            index=models.Index(fields=['payment', 'status'], name='athm_refund_status_idx'),
        ),
    ]
