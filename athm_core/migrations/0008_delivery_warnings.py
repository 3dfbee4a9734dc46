"""What a delivery keeps for ATH Móvil's every real shape: the exact bytes and declared charset of its body,
the warnings of what was cleaned to store it, the ``unverified`` outcome, and a payment's fingerprint (a
cancelled or expired checkout that names no identifier)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("athm_core", "0007_remove_webhookevent_receiver_errors"),
    ]

    operations = [
        migrations.AddField(
            model_name="payment",
            name="fingerprint",
            field=models.CharField(blank=True, editable=False, max_length=64, null=True, unique=True),
        ),
        migrations.AddField(
            model_name="webhookevent",
            name="charset",
            field=models.CharField(
                blank=True,
                help_text="as the request's Content-Type declared it",
                max_length=40,
                verbose_name="declared charset",
            ),
        ),
        migrations.AddField(
            model_name="webhookevent",
            name="raw_bytes",
            field=models.BinaryField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="webhookevent",
            name="warnings",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AlterField(
            model_name="webhookevent",
            name="outcome",
            field=models.CharField(
                choices=[
                    ("applied", "Applied"),
                    ("duplicate", "Duplicate (already applied)"),
                    ("ignored", "Ignored (arrived after a final state)"),
                    ("simulated", "Simulated (test button)"),
                    ("invalid", "Invalid payload"),
                    ("failed", "Failed"),
                    ("rejected", "Rejected (contradicts ATH Móvil or a recorded payment)"),
                    ("unverified", "Unverified (kept, not applied: ATH Móvil cannot confirm it)"),
                ],
                db_index=True,
                max_length=16,
            ),
        ),
    ]
