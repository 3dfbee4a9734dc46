"""When ATH Móvil last confirmed a payment: a confirmed event wins over an unconfirmed reference number."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("athm_core", "0011_anomalies"),
    ]

    operations = [
        migrations.AddField(
            model_name="payment",
            name="verified_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
