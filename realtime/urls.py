from django.contrib import admin
from django.urls import include, path

from bridge import ops, pages
from bridge.api.views import PushBatchView, PushView, SendView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("bridge.api.urls")),
    # Seed 000's paths, with its bodies.
    path("sse/push", PushView.as_view(), name="seed-push"),
    path("sse/push/batch", PushBatchView.as_view(), name="seed-push-batch"),
    path("sse/send", SendView.as_view(), name="seed-send"),
    path("ws/test-page", pages.ws_test_page, name="ws-test-page"),
    path("sse/test", pages.sse_test_page, name="sse-test-page"),
    path("health", ops.health, name="health"),
    path("ready", ops.ready, name="ready"),
    path("metrics", ops.metrics, name="metrics"),
]
