"""Database backends that take their credentials from a Secrets Manager secret (``DB_SECRET_ARN``).

RDS rotates a managed secret's password (every seven days by default) while Lambda containers live on.
A warm container keeps its open connection, which stays valid; but the next connection it opens would
carry the old password. These backends read the credentials (through :mod:`handler.secrets_manager`,
cached for a few minutes) whenever they open a connection, and when the database refuses them, read the
secret afresh and try once more.
"""

from __future__ import annotations

from typing import Any

from handler import secrets_manager


class SecretCredentials:
    """Mixed into a Django ``DatabaseWrapper`` whose settings name the secret as ``SECRET_ARN``."""

    settings_dict: dict[str, Any]
    Database: Any

    def _credentials(self, *, fresh: bool = False) -> dict[str, str]:
        secret = secrets_manager.database_secret(self.settings_dict["SECRET_ARN"], fresh=fresh)
        return {"user": secret.get("username") or self.settings_dict["USER"], "password": secret["password"]}

    def get_connection_params(self) -> dict[str, Any]:
        return {**super().get_connection_params(), **self._credentials()}  # type: ignore[misc]

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        try:
            return super().get_new_connection(conn_params)  # type: ignore[misc]
        except self.Database.OperationalError:
            credentials = self._credentials(fresh=True)
            if all(conn_params.get(key) == value for key, value in credentials.items()):
                raise  # the credentials are current: the refusal is about something else
            return super().get_new_connection({**conn_params, **credentials})  # type: ignore[misc]
