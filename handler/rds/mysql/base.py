"""MySQL/MariaDB with credentials from ``DB_SECRET_ARN``, re-read when the password rotates."""

from django.db.backends.mysql.base import DatabaseWrapper as MySQLDatabaseWrapper

from handler.rds import SecretCredentials


class DatabaseWrapper(SecretCredentials, MySQLDatabaseWrapper):
    pass
