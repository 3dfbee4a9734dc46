"""ATH Móvil's identifiers compared exactly on MySQL and MariaDB: a binary collation for their columns.

Their default collations (``utf8mb4_general_ci``, ``utf8mb4_unicode_ci``, ``utf8mb4_0900_ai_ci``,
``utf8mb4_uca1400_ai_ci``) are case- and accent-insensitive: ``ABC123`` and ``abc123``, or ``pago-é`` and
``pago-e``, would be one checkout, one unique key and one refund link. PostgreSQL and SQLite compare these
columns exactly already, so this migration changes nothing there.

The collation is given to the columns, not to the models (``db_collation``): no collation name means the
same thing on every database. The models' state is therefore unchanged, and a later ``AlterField`` on one of
these fields would give the column the table's collation back; ``tests/test_exact_identifiers.py`` reads
the collations from information_schema so that such a migration fails the MariaDB run of the suite.

``utf8mb4_bin`` ignores trailing spaces, as every PAD SPACE collation does; the payload reader strips them
from every identifier, so no two ids can differ by them.
"""

from django.db import migrations

COLLATION = "utf8mb4_bin"

# (model, field): ATH Móvil's identifiers, and the keys made of them, that SQL compares.
EXACT_FIELDS = [
    ("Payment", "ecommerce_id"),
    ("Payment", "reference_number"),
    ("Payment", "fingerprint"),
    ("Refund", "reference_number"),
    ("Refund", "idempotency_key"),
    ("WebhookEvent", "idempotency_key"),
]


def _collated(field, collation):
    """``field`` as the same column with ``collation`` (None: the table's)."""
    name, _path, args, kwargs = field.deconstruct()
    kwargs["db_collation"] = collation
    clone = field.__class__(*args, **kwargs)
    clone.set_attributes_from_name(name)
    clone.model = field.model
    return clone


def _alter(apps, schema_editor, *, before, after):
    if schema_editor.connection.vendor != "mysql":
        return
    for model_name, field_name in EXACT_FIELDS:
        model = apps.get_model("athm_core", model_name)
        field = model._meta.get_field(field_name)
        # Django's MODIFY keeps the column's type, length and NULL; MySQL rebuilds its indexes and unique
        # constraints with the new collation.
        schema_editor.alter_field(model, _collated(field, before), _collated(field, after))


def exact(apps, schema_editor):
    _alter(apps, schema_editor, before=None, after=COLLATION)


def table_collation(apps, schema_editor):
    _alter(apps, schema_editor, before=COLLATION, after=None)


class Migration(migrations.Migration):
    dependencies = [
        ("athm_core", "0008_delivery_warnings"),
    ]

    operations = [
        # Schema changes: not inside the transaction that RunPython would open (MySQL refuses DDL there).
        migrations.RunPython(exact, table_collation, atomic=False),
    ]
