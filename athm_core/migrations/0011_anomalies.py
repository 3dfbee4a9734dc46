"""Money that cannot be right, flagged on the delivery that recorded it and on its payment."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("athm_core", "0010_pending_verification"),
    ]

    operations = [
        migrations.AddField(
            model_name="payment",
            name="anomalies",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="webhookevent",
            name="anomalies",
            field=models.JSONField(blank=True, default=list),
        ),
    ]
