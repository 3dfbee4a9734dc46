"""Deliveries that ATH Móvil could not verify yet are kept as ``pending`` and verified again by the relay."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("athm_core", "0009_exact_identifiers"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookevent",
            name="settled_by",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="settled",
                to="athm_core.webhookevent",
            ),
        ),
        migrations.AddField(
            model_name="webhookevent",
            name="verification_attempts",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="webhookevent",
            name="verify_after",
            field=models.DateTimeField(blank=True, db_index=True, null=True),
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
                    ("pending", "Pending verification (kept: ATH Móvil could not be asked yet)"),
                ],
                db_index=True,
                max_length=16,
            ),
        ),
    ]
