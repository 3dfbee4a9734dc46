"""Django app configuration for the example shop."""

from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    verbose_name = "Shop (example receivers)"
    default_auto_field = "django.db.models.BigAutoField"
