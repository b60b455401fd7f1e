"""System checks: deployments that cannot work as meant, or are open by mistake."""

from bridge import checks


def test_auth_switched_off_in_production_is_a_warning(settings):
    settings.DEBUG = False
    settings.WEBSOCKET_AUTH_REQUIRED = settings.API_AUTH_REQUIRED = True
    settings.SSE_AUTH_REQUIRED = False
    (warning,) = checks.authentication_switched_off(None)
    assert warning.id == "bridge.W002"
    assert "SSE_AUTH_REQUIRED" in warning.msg and "API_AUTH_REQUIRED" not in warning.msg


def test_auth_on_or_debug_is_no_warning(settings):
    settings.DEBUG = False
    settings.WEBSOCKET_AUTH_REQUIRED = settings.SSE_AUTH_REQUIRED = True
    settings.API_AUTH_REQUIRED = True
    assert checks.authentication_switched_off(None) == []
    settings.DEBUG = True
    settings.SSE_AUTH_REQUIRED = False
    assert checks.authentication_switched_off(None) == []


def test_the_embedded_default_in_production_is_a_warning(settings):
    settings.DEBUG, settings.REDIS_URL = False, ""
    (warning,) = checks.embedded_default_in_production(None)
    assert warning.id == "bridge.W001"
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    assert checks.embedded_default_in_production(None) == []
