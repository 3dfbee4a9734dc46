"""A MySQL/MariaDB database that is not utf8mb4 is refused (system check ``athm_core.E002``) by ``migrate``
and by the Lambda cold start, with the fix; on a utf8mb4 database a customer's emoji is stored like any
text.

The refusals run against real databases created here with another character set (dropped after each test),
in child processes, as ``athm migrate`` and a Lambda container would meet them. The emoji tests run on
every database.
"""

import json
import os
import re
import socket
import subprocess
import sys

import pytest
from django.core import checks
from django.db import connection

from athm_core.checks import utf8mb4_errors
from athm_core.models import Payment, WebhookEvent
from tests.conftest import ROOT, database_url, sample_data
from tests.test_local import athm_command

pytestmark = pytest.mark.django_db(transaction=True)

MYSQL_ONLY = pytest.mark.skipif(
    connection.vendor != "mysql",
    reason="character sets are MySQL's and MariaDB's: run with DATABASE_URL=mysql://... (make test-mariadb)",
)
MESSAGE = "¡Gracias! 🎉☕ nos vemos 🇵🇷"


def emoji_body(*, raw_utf8: bool) -> bytes:
    """An eCommerce completion whose customer message has emoji: as ``\\ud83c`` escapes, or raw UTF-8."""
    data = {**sample_data("ecommerce_completed.production"), "message": MESSAGE}
    return json.dumps(data, ensure_ascii=not raw_utf8).encode("utf-8")


# --- utf8mb4: stored as sent -----------------------------------------------------------------------------


@pytest.mark.parametrize("raw_utf8", [False, True], ids=["escaped", "raw-utf8"])
def test_an_emoji_message_is_stored_as_sent(lambda_handler, raw_utf8):
    body = emoji_body(raw_utf8=raw_utf8)
    response = lambda_handler.post(body)
    assert response.status == 200 and response.json()["outcome"] == "applied", response
    assert Payment.objects.get().message == MESSAGE
    event = WebhookEvent.objects.get()
    assert event.body_bytes == body and json.loads(event.raw_body)["message"] == MESSAGE


@MYSQL_ONLY
def test_the_test_database_passes_the_check():
    assert checks.run_checks(tags=[checks.Tags.database], databases=["default"]) == []


# --- a database that is not utf8mb4 ----------------------------------------------------------------------


@pytest.fixture
def scratch_database():
    """``create(charset)``: a new, empty database with that default character set; its name and URL. Every
    database made is dropped when the test ends."""
    made: list[str] = []

    def create(charset: str) -> tuple[str, str]:
        name = f"athm_{charset}_{os.getpid()}_{len(made)}"
        quoted = connection.ops.quote_name(name)
        with connection._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {quoted}")
            cursor.execute(f"CREATE DATABASE {quoted} CHARACTER SET {charset}")
        made.append(name)
        return name, database_url(name)

    yield create
    with connection._nodb_cursor() as cursor:
        for name in made:
            cursor.execute(f"DROP DATABASE IF EXISTS {connection.ops.quote_name(name)}")


def athm(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*athm_command(), *arguments], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def cold_start(env: dict[str, str]) -> subprocess.CompletedProcess:
    """A Lambda container's first import of the webhook function."""
    return subprocess.run(
        [sys.executable, "-c", "import handler.app"],
        env={**env, "AWS_LAMBDA_FUNCTION_NAME": "athm-webhook"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def server_rows(sql: str, params: list | None = None) -> list[tuple]:
    with connection._nodb_cursor() as cursor:
        cursor.execute(sql, params or [])
        return list(cursor.fetchall())


def tables_in(name: str) -> list[str]:
    query = "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME"
    return [table for (table,) in server_rows(query, [name])]


@MYSQL_ONLY
def test_migrate_and_the_cold_start_refuse_a_latin1_database_with_the_fix(scratch_database, child_env):
    name, url = scratch_database("latin1")
    env = {**child_env, "DATABASE_URL": url}
    fix = f"ALTER DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"

    refused = athm("migrate", "--noinput", env=env)
    assert refused.returncode != 0
    assert "(athm_core.E002)" in refused.stderr
    assert f"The MySQL/MariaDB database '{name}' has the character set latin1, not utf8mb4" in refused.stderr
    assert fix in refused.stderr and "character_set_server" in refused.stderr
    assert tables_in(name) == []  # refused before a table was made

    started = cold_start(env)
    assert started.returncode != 0
    assert "ImproperlyConfigured" in started.stderr and fix in started.stderr

    # The fix it gives is the whole fix.
    server_rows(fix)
    migrated = athm("migrate", "--noinput", "-v", "0", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert cold_start(env).returncode == 0
    charsets = server_rows(
        "SELECT DISTINCT CHARACTER_SET_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s"
        " AND TABLE_NAME LIKE 'athm\\_core\\_%%' AND CHARACTER_SET_NAME IS NOT NULL",
        [name],
    )
    assert charsets == [("utf8mb4",)]


@MYSQL_ONLY
def test_latin1_tables_lose_emoji_and_are_refused_until_converted(scratch_database, child_env, start_child):
    """Tables made on a latin1 database by an earlier version: what goes wrong, the refusal, the fix."""
    name, url = scratch_database("latin1")
    env = {**child_env, "DATABASE_URL": url}
    made = athm("migrate", "--skip-checks", "--noinput", "-v", "0", env=env)
    assert made.returncode == 0, made.stderr
    # Then the database alone is put right: its tables stay latin1.
    server_rows(f"ALTER DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")

    # What the check keeps from happening: a 500, and with a raw UTF-8 body not even a record of it.
    child = start_child(DATABASE_URL=url)
    child.wait_ready()
    assert child.request(emoji_body(raw_utf8=False))["status"] == 500
    assert child.request(emoji_body(raw_utf8=True))["status"] == 500
    child.close()
    recorded = server_rows(f"SELECT outcome FROM `{name}`.athm_core_webhookevent")
    assert recorded == [("failed",)]  # the escaped body's failure only
    assert server_rows(f"SELECT COUNT(*) FROM `{name}`.athm_core_payment") == [(0,)]

    refused = athm("migrate", "--noinput", env=env)
    assert refused.returncode != 0
    assert f"These athm_core tables in the MySQL/MariaDB database '{name}' are not utf8mb4" in refused.stderr
    assert "athm_core_payment" in refused.stderr and "athm_core_webhookevent" in refused.stderr
    converts = [
        f"ALTER TABLE `{table}` CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
        for table in tables_in(name)
        if table.startswith("athm_core_")
    ]
    assert all(statement in refused.stderr for statement in converts)
    assert "ALTER DATABASE" not in refused.stderr  # the database is right already
    assert cold_start(env).returncode != 0

    for statement in converts:
        server_rows(statement.replace("ALTER TABLE ", f"ALTER TABLE `{name}`.", 1))
    # Converting took the identifiers' binary collation away (migration 0009 ran before): refused again,
    # with the statements that give it back.
    refused = athm("migrate", "--noinput", env=env)
    assert refused.returncode != 0 and "lost their binary collation (utf8mb4_bin)" in refused.stderr
    restores = re.findall(
        r"ALTER TABLE `athm_core_\w+` MODIFY `\w+` varchar\(\d+\) COLLATE utf8mb4_bin (?:NOT )?NULL;",
        refused.stderr,
    )
    assert len(restores) == 6, refused.stderr
    for statement in restores:
        server_rows(statement.replace("ALTER TABLE ", f"ALTER TABLE `{name}`.", 1))
    migrated = athm("migrate", "--noinput", "-v", "0", env=env)
    assert migrated.returncode == 0, migrated.stderr
    child = start_child(DATABASE_URL=url)
    child.wait_ready()
    assert child.request(emoji_body(raw_utf8=True))["answer"]["outcome"] == "applied"
    child.close()
    assert server_rows(f"SELECT message FROM `{name}`.athm_core_payment") == [(MESSAGE,)]
    # The identifiers are compared exactly again.
    collations = server_rows(
        "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s"
        " AND TABLE_NAME = 'athm_core_payment' AND COLUMN_NAME IN ('ecommerce_id', 'reference_number')",
        [name],
    )
    assert collations == [("utf8mb4_bin",), ("utf8mb4_bin",)]


@MYSQL_ONLY
def test_a_utf8mb3_connection_charset_is_refused(child_env):
    for charset in ("utf8", "utf8mb3"):
        env = {**child_env, "DATABASE_URL": f"{child_env['DATABASE_URL']}?charset={charset}"}
        refused = athm("check", "--database", "default", env=env)
        assert refused.returncode != 0
        assert f"DATABASES['default']['OPTIONS']['charset'] is '{charset}'" in refused.stderr
        assert cold_start(env).returncode != 0


@MYSQL_ONLY
def test_the_cold_start_check_leaves_one_connection_per_container(scratch_database, child_env, start_child):
    name, url = scratch_database("utf8mb4")
    assert athm("migrate", "--noinput", "-v", "0", env={**child_env, "DATABASE_URL": url}).returncode == 0
    child = start_child(DATABASE_URL=url, AWS_LAMBDA_FUNCTION_NAME="athm-webhook")
    child.wait_ready()
    assert child.request(emoji_body(raw_utf8=True))["answer"]["outcome"] == "applied"
    # The check's connection was closed: only the worker thread's, which every warm invocation reuses.
    sessions = server_rows("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", [name])
    assert sessions == [(1,)], child.log()
    child.close()


@MYSQL_ONLY
def test_a_database_that_cannot_be_reached_is_not_an_error_of_the_check():
    from django.db.backends.mysql.base import DatabaseWrapper

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    unreachable = {**connection.settings_dict, "HOST": "127.0.0.1", "PORT": port}
    assert utf8mb4_errors(DatabaseWrapper(unreachable, alias="unreachable")) == []
    # What the settings say is still checked.
    misconfigured = {**unreachable, "OPTIONS": {**unreachable["OPTIONS"], "charset": "utf8"}}
    [error] = utf8mb4_errors(DatabaseWrapper(misconfigured, alias="unreachable"))
    assert error.id == "athm_core.E002" and "'utf8'" in error.msg


class ElsewhereRouter:
    """Puts athm_core's tables in a database other than ``default``."""

    def allow_migrate(self, db, app_label, **hints):
        return db != "default" if app_label == "athm_core" else None


@MYSQL_ONLY
def test_only_the_databases_that_hold_athm_core_are_checked(settings, monkeypatch):
    monkeypatch.setitem(
        connection.settings_dict, "OPTIONS", {**connection.settings_dict["OPTIONS"], "charset": "utf8"}
    )
    [error] = checks.run_checks(tags=[checks.Tags.database], databases=["default"])
    assert error.id == "athm_core.E002"
    # A project's other database, with whatever character set it has, is not this app's business.
    settings.DATABASE_ROUTERS = [f"{__name__}.ElsewhereRouter"]
    assert checks.run_checks(tags=[checks.Tags.database], databases=["default"]) == []
