"""Django app configuration for athm_core."""

from django.apps import AppConfig


class AthmCoreConfig(AppConfig):
    name = "athm_core"
    verbose_name = "ATH Móvil"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from athm_core import checks  # noqa: F401 - registers the system checks
