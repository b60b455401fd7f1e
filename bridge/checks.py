"""System checks (`manage.py check`) for deployments that cannot work as meant."""

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.compatibility)
def embedded_default_in_production(app_configs, **kwargs):
    """Without REDIS_URL every process is a gateway of its own."""
    if settings.DEBUG or settings.REDIS_URL:
        return []
    return [
        checks.Warning(
            "REDIS_URL is not set: history, the connection registry and fan-out live in "
            "this one process. Several processes will not see each other's clients.",
            hint="Set REDIS_URL when running more than one process.",
            id="bridge.W001",
        )
    ]
