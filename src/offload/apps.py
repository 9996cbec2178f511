"""The Django app configuration of offload."""

from django.apps import AppConfig


class OffloadConfig(AppConfig):
    name = "offload"
    verbose_name = "offload jobs"
    default_auto_field = "django.db.models.BigAutoField"
