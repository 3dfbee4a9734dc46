"""Receiver failures live on the notices now (0006 moved them there)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('athm_core', '0006_failures_to_notices'),
    ]

    operations = [
        migrations.RemoveField(
            model_name='webhookevent',
            name='receiver_errors',
        ),
    ]
