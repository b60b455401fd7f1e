from django.contrib import admin
from django.urls import include, path

from bridge import ops, pages
from bridge.api.views import (
    ConnectionsView,
    ConnectionView,
    InternalSendView,
    PushBatchView,
    PushView,
    SeedBroadcastView,
    SeedChannelMessageView,
    SeedNotificationView,
    SeedSSEChannelView,
    SendView,
    StatsView,
)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("bridge.api.urls")),
    # Seed 000's paths, with its bodies.
    path("sse/push", PushView.as_view(), name="seed-push"),
    path("sse/push/batch", PushBatchView.as_view(), name="seed-push-batch"),
    path("sse/send", SendView.as_view(), name="seed-send"),
    # Seed 002's paths (docs/api.md, "The original bridge's paths").
    path("ws/stats", StatsView.as_view(), name="seed-ws-stats"),
    path("ws/connections", ConnectionsView.as_view(), name="seed-ws-connections"),
    path("ws/connections/<str:connection_id>", ConnectionView.as_view(), name="seed-ws-connection"),
    path("ws/broadcast", SeedBroadcastView.as_view(), name="seed-ws-broadcast"),
    path("ws/send-to-channel", SeedChannelMessageView.as_view(), name="seed-ws-send-to-channel"),
    path("sse/send-to-channel", SeedSSEChannelView.as_view(), name="seed-sse-send-to-channel"),
    path("sse/notification", SeedNotificationView.as_view(), name="seed-sse-notification"),
    # Seed 001's path (docs/api.md, "POST /internal/send").
    path("internal/send", InternalSendView.as_view(), name="seed-internal-send"),
    path("ws/test-page", pages.ws_test_page, name="ws-test-page"),
    path("sse/test", pages.sse_test_page, name="sse-test-page"),
    path("health", ops.health, name="health"),
    path("ready", ops.ready, name="ready"),
    path("metrics", ops.metrics, name="metrics"),
]
