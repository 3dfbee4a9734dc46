"""Django app configuration for athm_core."""

from django.apps import AppConfig


class AthmCoreConfig(AppConfig):
    name = "athm_core"
    verbose_name = "ATH Móvil"
    default_auto_field = "django.db.models.BigAutoField"
