"""The Django app configuration of offload."""

from django.apps import AppConfig


class OffloadConfig(AppConfig):
    name = "offload"
    verbose_name = "offload jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from offload.postgres import install_fast_timestamps

        connection_created.connect(install_fast_timestamps, dispatch_uid="offload-fast-timestamps")
