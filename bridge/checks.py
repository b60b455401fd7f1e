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


@checks.register(checks.Tags.security)
def authentication_switched_off(app_configs, **kwargs):
    """A deployment with an auth switch off trusts whatever user id a client names."""
    if settings.DEBUG:
        return []
    off = [
        name
        for name in ("WEBSOCKET_AUTH_REQUIRED", "SSE_AUTH_REQUIRED", "API_AUTH_REQUIRED")
        if not getattr(settings, name)
    ]
    if not off:
        return []
    return [
        checks.Warning(
            f"{', '.join(off)} false with DEBUG=false: what it guards lets anyone in "
            "(a connection is whoever its `user_id` names; the API needs no key).",
            hint="Leave the switches on in production; connect with JWTs or tokens.",
            id="bridge.W002",
        )
    ]
