"""When ATH Móvil first answered about a pending delivery without confirming it: never applied by the deadline."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("athm_core", "0012_payment_verified_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookevent",
            name="not_confirmed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
