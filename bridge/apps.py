from django.apps import AppConfig


class BridgeConfig(AppConfig):
    name = "bridge"
    verbose_name = "Messaging core"

    def ready(self):
        from . import checks  # noqa: F401 (registers the system checks)
        from .metrics import watch_gc

        watch_gc()
