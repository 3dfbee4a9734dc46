"""System checks (``manage.py check``, and before most commands): settings that would fail every delivery
are reported when the project starts, not one webhook at a time.

``athm_core.E002`` is a database check (``Tags.database``): Django runs it before ``migrate`` (and
``check --database default`` on demand), and :func:`require_utf8mb4` refuses the Lambda functions' cold
start (``handler.boot``) with the same messages. A MySQL/MariaDB database whose character set is not
``utf8mb4`` cannot store a customer's message with an emoji (the webhook would answer 500, and a body in raw
UTF-8 would not even be recorded), so it is refused before a table is created in it.
"""

from django.apps import apps
from django.core.checks import Error, Tags, register
from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError, OperationalError, connections, router

UTF8MB4 = "utf8mb4"
# The columns that hold ATH Móvil's identifiers and the keys made of them, compared exactly: migration
# 0009_exact_identifiers gives them this collation, and converting a table (the fix below) takes it away.
EXACT_COLLATION = "utf8mb4_bin"
EXACT_FIELDS = [
    ("Payment", "ecommerce_id"),
    ("Payment", "reference_number"),
    ("Payment", "fingerprint"),
    ("Refund", "reference_number"),
    ("Refund", "idempotency_key"),
    ("WebhookEvent", "idempotency_key"),
]
# What new databases and converted tables should get: the collation Django's MySQL test databases use.
UTF8MB4_COLLATION = "utf8mb4_unicode_ci"


@register()
def verifier_is_importable(app_configs, **kwargs) -> list[Error]:
    """``ATHM_VERIFIER`` names a function that can be imported."""
    from athm_core.receive import configured_check

    try:
        configured_check()
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc), hint="a dotted path such as 'athm_core.ath.verification.check'", id="athm_core.E001"
            )
        ]
    return []


@register(Tags.database)
def mysql_database_is_utf8mb4(app_configs, databases=None, **kwargs) -> list[Error]:
    """Each MySQL/MariaDB database it is asked about that holds athm_core's tables stores utf8mb4: the
    database's default character set, the connection's, and athm_core's tables where they exist."""
    errors: list[Error] = []
    for alias in databases or ():
        if _holds_athm_core(alias):
            errors += utf8mb4_errors(connections[alias])
    return errors


def require_utf8mb4() -> None:
    """``ImproperlyConfigured`` with ``athm_core.E002``'s messages and fixes when a MySQL/MariaDB database
    that holds athm_core's tables cannot store every character. No query unless one is MySQL/MariaDB; a
    connection opened here is closed again (the caller's requests may run on another thread, with a
    connection of their own)."""
    for alias in connections:
        if not _holds_athm_core(alias):
            continue
        connection = connections[alias]
        opened_here = connection.connection is None
        try:
            errors = utf8mb4_errors(connection)
        finally:
            if opened_here:
                connection.close()
        if errors:
            raise ImproperlyConfigured(" ".join(f"{error.msg} {error.hint} ({error.id})" for error in errors))


def _holds_athm_core(alias: str) -> bool:
    """Whether ``alias`` is MySQL/MariaDB and the routers put athm_core's tables there (a project's other
    databases, whatever their character set, are not this app's business)."""
    from athm_core.models import Payment

    return connections[alias].vendor == "mysql" and router.allow_migrate_model(alias, Payment)


def utf8mb4_errors(connection) -> list[Error]:
    """What keeps ``connection`` (MySQL or MariaDB) from storing every character: ``[]`` when nothing does,
    or when the database cannot be reached (the first request will answer 503 and say so).

    One query: the database's and the connection's character sets, and athm_core's tables that are not
    utf8mb4 (their default, or a text column of theirs).
    """
    errors: list[Error] = []
    configured = str(connection.settings_dict.get("OPTIONS", {}).get("charset", UTF8MB4))
    if configured.lower() != UTF8MB4:
        errors.append(
            Error(
                f"DATABASES[{connection.alias!r}]['OPTIONS']['charset'] is {configured!r}: the connection "
                "cannot carry 4-byte UTF-8 characters (emoji), so a customer's message with one fails.",
                hint="Remove 'charset' from OPTIONS (Django's MySQL backend then uses utf8mb4), or set it to "
                "'utf8mb4'.",
                id="athm_core.E002",
            )
        )
    tables = sorted(model._meta.db_table for model in apps.get_app_config("athm_core").get_models())
    names = ", ".join(["%s"] * len(tables))
    query = (
        "SELECT DATABASE(), @@character_set_database, @@character_set_client, @@character_set_connection,"
        " (SELECT GROUP_CONCAT(DISTINCT TABLE_NAME ORDER BY TABLE_NAME SEPARATOR ' ') FROM ("
        "  SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
        f"   AND TABLE_NAME IN ({names}) AND LEFT(TABLE_COLLATION, 8) <> 'utf8mb4_'"
        "  UNION SELECT TABLE_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
        f"   AND TABLE_NAME IN ({names}) AND CHARACTER_SET_NAME <> 'utf8mb4'"
        " ) AS not_utf8mb4)"
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, [*tables, *tables])
            name, database, client, connection_charset, not_utf8mb4 = cursor.fetchone()
    except (OperationalError, InterfaceError):
        return errors
    name = name or ""  # no database selected: migrate says so itself
    if database != UTF8MB4:
        errors.append(
            Error(
                f"The MySQL/MariaDB database {name!r} has the character set {database}, not utf8mb4: the "
                "tables migrate creates in it could not store a customer's message with an emoji (the "
                "webhook would answer 500, and the delivery would not be recorded).",
                hint=f"Run: ALTER DATABASE {connection.ops.quote_name(name)} CHARACTER SET utf8mb4 COLLATE "
                f"{UTF8MB4_COLLATION}; (it changes the default for new tables only). On RDS, set "
                "character_set_server = utf8mb4 and collation_server = utf8mb4_unicode_ci in the DB "
                "parameter group too, so that databases created later get it. See docs/deploy.md.",
                id="athm_core.E002",
            )
        )
    if not_utf8mb4:
        converts = " ".join(
            f"ALTER TABLE {connection.ops.quote_name(table)} CONVERT TO CHARACTER SET utf8mb4 COLLATE "
            f"{UTF8MB4_COLLATION};"
            for table in not_utf8mb4.split()
        )
        errors.append(
            Error(
                f"These athm_core tables in the MySQL/MariaDB database {name!r} are not utf8mb4: "
                f"{', '.join(not_utf8mb4.split())}. They cannot store a customer's message with an emoji.",
                hint=f"Run: {converts} Then run migrate. See docs/deploy.md.",
                id="athm_core.E002",
            )
        )
    errors += _collation_errors(connection, name)
    wrong = sorted({charset for charset in (client, connection_charset) if charset != UTF8MB4})
    if wrong and configured.lower() == UTF8MB4:
        errors.append(
            Error(
                f"The connection to the MySQL/MariaDB database {name!r} uses the character set "
                f"{', '.join(wrong)}, not utf8mb4: it cannot carry a customer's message with an emoji.",
                hint="Remove what sets it (a SET NAMES in OPTIONS['init_command'], a read_default_file, "
                "the server's skip-character-set-client-handshake); Django's MySQL backend asks for "
                "utf8mb4.",
                id="athm_core.E002",
            )
        )
    return errors


def _collation_errors(connection, name: str) -> list[Error]:
    """The identifier columns that lost their binary collation (``ALTER TABLE ... CONVERT TO`` resets it),
    once migration 0009 has given it to them; their fix, column by column."""
    from django.db.migrations.recorder import MigrationRecorder

    try:
        if ("athm_core", "0009_exact_identifiers") not in MigrationRecorder(connection).applied_migrations():
            return []
        app = apps.get_app_config("athm_core")
        lost = []
        with connection.cursor() as cursor:
            for model_name, field_name in EXACT_FIELDS:
                field = app.get_model(model_name)._meta.get_field(field_name)
                cursor.execute(
                    "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
                    " AND TABLE_NAME = %s AND COLUMN_NAME = %s",
                    [field.model._meta.db_table, field.column],
                )
                row = cursor.fetchone()
                if row is not None and row[0] != EXACT_COLLATION:
                    lost.append(field)
    except (OperationalError, InterfaceError):
        return []
    if not lost:
        return []
    quote = connection.ops.quote_name
    fixes = " ".join(
        f"ALTER TABLE {quote(field.model._meta.db_table)} MODIFY {quote(field.column)}"
        f" varchar({field.max_length}) COLLATE {EXACT_COLLATION} {'NULL' if field.null else 'NOT NULL'};"
        for field in lost
    )
    columns = ", ".join(f"{field.model._meta.db_table}.{field.column}" for field in lost)
    return [
        Error(
            f"These columns of ATH Móvil's identifiers in the MySQL/MariaDB database {name!r} lost their "
            f"binary collation ({EXACT_COLLATION}), so ids that differ only by case or accent would be taken "
            f"as one: {columns}. Converting a table's character set resets it.",
            hint=f"Run: {fixes} See docs/deploy.md.",
            id="athm_core.E002",
        )
    ]
