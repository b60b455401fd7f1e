"""ASGI entry point: HTTP to Django, WebSockets to the gateway consumer."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime.settings")

from django.core.asgi import get_asgi_application

# Django must be set up before anything imports models or consumers.
django_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path, reverse  # noqa: E402

from bridge.api.express import PushLane  # noqa: E402
from bridge.asgi import BodyLimit, BrowserOriginValidator  # noqa: E402
from realtime.handlers import LeanASGIHandler, route_by_path  # noqa: E402
from realtime.heap import freeze_long_lived  # noqa: E402
from realtime.routing import sse_urlpatterns, websocket_urlpatterns  # noqa: E402
from realtime.static import static_or  # noqa: E402

push_lane = PushLane()
api_app = LeanASGIHandler(express={reverse("push"): push_lane, reverse("seed-push"): push_lane})
http_app = URLRouter(
    [
        *sse_urlpatterns,
        re_path(r"", route_by_path(api_app, django_app, settings.FULL_STACK_PATHS)),
    ]
)

freeze_long_lived()

application = ProtocolTypeRouter(
    {
        "http": BodyLimit(static_or(http_app)),
        "websocket": BrowserOriginValidator(
            URLRouter(websocket_urlpatterns), settings.ALLOWED_ORIGINS
        ),
    }
)
