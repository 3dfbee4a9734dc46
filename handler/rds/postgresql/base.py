"""PostgreSQL with credentials from ``DB_SECRET_ARN``, re-read when the password rotates."""

from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLDatabaseWrapper

from handler.rds import SecretCredentials


class DatabaseWrapper(SecretCredentials, PostgreSQLDatabaseWrapper):
    pass
