"""The ``athm`` command: Django's management command line with ``handler.settings`` preset, booted like
every Lambda function (``handler.boot``: Django set up, the merchant's ``ATHM_RECEIVERS`` imported), so
that ``athm reprocess``, ``athm reconcile`` and ``athm redispatch`` reach the same receivers.

``athm migrate``, ``athm serve``, ``athm invoke EVENT.json``, ``athm createsuperuser`` and every other
Django command.

The admin is on only with ``ATHM_ADMIN=1`` (``handler.settings``), and its commands exist only then.
``athm createsuperuser`` and ``athm changepassword`` turn it on themselves (unless ATHM_ADMIN says
otherwise): whoever makes an admin user wants the admin, and should not need to know the variable. When
the admin's tables are not there (``athm migrate`` ran without the admin) they say, in one line, how to
make them, instead of a database traceback; another command of the admin's, run without it, names the
variable instead of Django's "Unknown command".
"""

import os
import sys

# Commands whose changes or deliveries reach the receivers: without ATHM_RECEIVERS, none would hear them.
_ANNOUNCING = {"reprocess", "reconcile", "redispatch", "relay", "refund", "find_payment"}
# Commands that make the admin's users: they turn the admin on.
_ADMIN_USERS = {"createsuperuser", "changepassword"}
# The commands of the admin's apps (auth, contenttypes, sessions, staticfiles): they exist only with it.
_ADMIN_COMMANDS = {*_ADMIN_USERS, "remove_stale_contenttypes", "clearsessions", "collectstatic", "findstatic"}
# The admin's apps, whose tables `createsuperuser` and `changepassword` need.
ADMIN_APP_LABELS = {"admin", "auth", "contenttypes", "sessions"}

ADMIN_OFF = (
    "athm: `{command}` is a command of the admin, which is off: set ATHM_ADMIN=1 "
    "(ATHM_ADMIN=1 athm {command})"
)
NO_ADMIN_TABLES = (
    "athm: the admin's tables are not in this database: run `ATHM_ADMIN=1 athm migrate` "
    "(or `make serve`, which migrates with the admin on), then `athm {command}` again"
)


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command in _ADMIN_USERS:
        os.environ.setdefault("ATHM_ADMIN", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "handler.settings")
    import handler.boot  # Django set up and the receivers imported

    handler.boot.ready()  # a command is no Lambda set-up: the collector works as usual

    from django.conf import settings
    from django.core.management import execute_from_command_line, get_commands

    if command in _ADMIN_COMMANDS and command not in get_commands():
        sys.exit(ADMIN_OFF.format(command=command))
    asking_for_help = {"-h", "--help"} & set(sys.argv[2:])
    if command in _ADMIN_USERS and not asking_for_help and _admin_tables_missing():
        sys.exit(NO_ADMIN_TABLES.format(command=command))
    if command in _ANNOUNCING and not settings.ATHM_RECEIVERS:
        print(
            "athm: ATHM_RECEIVERS is not set, so no receiver of yours is loaded: the changes this command "
            "makes are announced to none of them, and their pending notices cannot be delivered from here. "
            "Set ATHM_RECEIVERS (and PYTHONPATH to your receivers' code) as the functions have them, unless "
            "you have no receivers.",
            file=sys.stderr,
        )
    execute_from_command_line(sys.argv)


def unapplied_migrations() -> list[str]:
    """The app label of each migration not applied to the default database yet (``athm serve`` says so)."""
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    return [
        migration.app_label for migration, _ in executor.migration_plan(executor.loader.graph.leaf_nodes())
    ]


def _admin_tables_missing() -> bool:
    """Whether a migration of the admin's apps has not been applied to the default database."""
    return bool(ADMIN_APP_LABELS.intersection(unapplied_migrations()))


if __name__ == "__main__":
    main()
