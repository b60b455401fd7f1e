from django.urls import re_path

from bridge.consumers import GatewayConsumer
from bridge.sse import EventStreamConsumer

gateway = GatewayConsumer.as_asgi()
websocket_urlpatterns = [
    re_path(r"^ws/?$", gateway),
    # Seed 002's and seed 004's WebSocket paths.
    re_path(r"^ws/connect/?$", gateway),
    re_path(r"^api/v1/ws(/v2)?/?$", gateway),
]

# Event streams are Channels HTTP consumers; every other path goes to Django.
events = EventStreamConsumer.as_asgi()
sse_urlpatterns = [
    re_path(r"^events/?$", events),
    re_path(r"^events/(?P<user_id>[^/]+)/?$", events),
    # Seed 002's and seed 003's stream paths.
    re_path(r"^sse/connect/?$", events),
]
