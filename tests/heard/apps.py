"""Django app configuration for tests.heard."""

from django.apps import AppConfig


class HeardConfig(AppConfig):
    name = "tests.heard"
    label = "heard"
    verbose_name = "Receivers heard (tests)"
    default_auto_field = "django.db.models.BigAutoField"
