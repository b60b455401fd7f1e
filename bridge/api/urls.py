from django.urls import path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from .views import (
    ChannelView,
    ConnectionsView,
    ConnectionView,
    PublicAccountsView,
    PushBatchView,
    PushView,
    SendView,
    StatsView,
    TokensView,
    UserView,
)

urlpatterns = [
    path("push", PushView.as_view(), name="push"),
    path("push/batch", PushBatchView.as_view(), name="push-batch"),
    path("send", SendView.as_view(), name="send"),
    path("stats", StatsView.as_view(), name="stats"),
    path("connections", ConnectionsView.as_view(), name="connections"),
    path("connections/<str:connection_id>", ConnectionView.as_view(), name="connection"),
    # `path`: a name with a slash reaches the view and is refused there (422).
    path("channels/<path:name>", ChannelView.as_view(), name="channel"),
    path("users/<path:user_id>", UserView.as_view(), name="user"),
    path("public-accounts", PublicAccountsView.as_view(), name="public-accounts"),
    path("tokens", TokensView.as_view(), name="tokens"),
    path("schema", SpectacularJSONAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]
