from django.urls import path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from .views import PublicAccountsView, PushBatchView, PushView, SendView, StatsView

urlpatterns = [
    path("push", PushView.as_view(), name="push"),
    path("push/batch", PushBatchView.as_view(), name="push-batch"),
    path("send", SendView.as_view(), name="send"),
    path("stats", StatsView.as_view(), name="stats"),
    path("public-accounts", PublicAccountsView.as_view(), name="public-accounts"),
    path("schema", SpectacularJSONAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]
