"""The HTTP transport: parse, call one service, render."""

import inspect
from http import HTTPStatus

from adrf.views import APIView
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView as SyncAPIView

from accounts import directory, jwts
from accounts.authentication import ApiKeyAuthentication

from .. import registry, services
from ..addressing import is_valid_channel, is_valid_user_id
from ..errors import NotConfigured, NotFound, Validation
from .codec import EventStreamRenderer, ORJSONRenderer, sse_event
from .permissions import AdminScope, AnyKey, PushScope, SendScope
from .serializers import (
    BatchOut,
    ChannelOut,
    ConnectionOut,
    ConnectionsQuery,
    InternalSendIn,
    PublicAccountOut,
    PushIn,
    ReceiptOut,
    SeedBroadcastIn,
    SeedChannelMessageIn,
    SeedNotificationIn,
    SeedSSEChannelIn,
    SendIn,
    StatsOut,
    TokenIn,
    TokenOut,
    UserOut,
    query_data,
    validate_batch,
)


class JSONFirstNegotiation(DefaultContentNegotiation):
    """A view with one renderer answers with it, without parsing `Accept`
    (a fifth of a push's cost); views with more, and a `?format=`, are
    negotiated as DRF does."""

    def select_renderer(self, request, renderers, format_suffix=None):
        if len(renderers) == 1 and not format_suffix and not _asks_format(request):
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)


def _asks_format(request) -> bool:
    # Most requests have no query string: no QueryDict to build for them.
    return bool(request.META.get("QUERY_STRING")) and "format" in request.query_params


class GatewayAPIView(APIView):
    """An async DRF view that runs DRF's `initial()` on the event loop.

    adrf hops to a thread for it; here it only negotiates content and checks
    permissions that need no database, so the hop is pure cost. The API key
    is checked before it, awaited (its first check reads the database).
    A view that names no scope needs `admin`.
    """

    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [AdminScope]
    content_negotiation_class = JSONFirstNegotiation

    async def async_dispatch(self, request, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            await self.aperform_authentication(request)
            self.initial(request, *args, **kwargs)
            handler = getattr(self, request.method.lower(), self.http_method_not_allowed)
            response = handler(request, *args, **kwargs)
            if inspect.isawaitable(response):  # DRF's own options() is sync
                response = await response
        except Exception as exc:  # noqa: BLE001 (DRF renders or re-raises it)
            response = self.handle_exception(exc)
        self.response = _rendered(self.finalize_response(request, response, *args, **kwargs))
        # DRF's request and view point at each other through the parser
        # context: freed here by reference counting, a request leaves no
        # cycle for a garbage collection to find (realtime/heap.py).
        request.parser_context = None
        return self.response

    def check_throttles(self, request):
        # adrf's own goes through async_to_sync, which cannot run on the event
        # loop; the throttle here is synchronous and in memory.
        SyncAPIView.check_throttles(self, request)

    async def aperform_authentication(self, request):
        """DRF's `Request._authenticate`, with each authenticator awaited."""
        for authenticator in request.authenticators:
            try:
                user_auth = await authenticator.aauthenticate(request)
            except exceptions.APIException:
                request._not_authenticated()
                raise
            if user_auth is not None:
                request._authenticator = authenticator
                request.user, request.auth = user_auth
                return
        request._not_authenticated()


def _rendered(response):
    """A DRF Response rendered here, on the event loop, as a plain
    HttpResponse: Django renders a response with a sync `render()` in a thread."""
    if not isinstance(response, Response):
        return response
    response.render()
    plain = HttpResponse(response.content, status=response.status_code)
    for header, value in response.items():
        plain[header] = value
    response.renderer_context = None  # it holds the response itself
    return plain


class PushView(GatewayAPIView):
    """Push one message to a user, a channel or every connection.

    Answers 202 with the message id, the number of connections it was written
    to, whether the target was online, and whether it was kept for later.
    """

    permission_classes = [PushScope]

    @extend_schema(
        request=PushIn,
        responses={202: ReceiptOut},
        summary="Push a message to a user, a channel or everyone",
        examples=[OpenApiExample("to a user", {"user_id": "user1", "data": {"text": "Hello!"}})],
    )
    async def post(self, request):
        receipt = await services.apush(item=PushIn.item(request.data))
        return Response(receipt.as_dict(), status=HTTPStatus.ACCEPTED)


class PushBatchView(GatewayAPIView):
    """Push up to BATCH_MAX messages in one request.

    Every item is validated first: one bad item answers 422 with `fields`
    keyed by its index, and nothing is delivered.
    """

    permission_classes = [PushScope]

    @extend_schema(
        request=PushIn(many=True),
        responses={202: BatchOut},
        summary="Push several messages; all are validated before any is delivered",
    )
    async def post(self, request):
        items = validate_batch(request.data)
        receipts = await services.apush_batch(items=items)
        return Response(
            {
                "results": [r.as_dict() for r in receipts],
                "delivered": sum(r.delivered for r in receipts),
            },
            status=HTTPStatus.ACCEPTED,
        )


class PublicAccountsView(GatewayAPIView):
    """The active public accounts: who can be addressed as @handle, and
    whether each is connected now."""

    permission_classes = [AnyKey]

    @extend_schema(responses={200: PublicAccountOut(many=True)}, summary="List public accounts")
    async def get(self, request):
        accounts = await services.apublic_accounts()
        return Response(PublicAccountOut(accounts, many=True).data)


class StatsView(GatewayAPIView):
    """Connections by transport, channels and subscriptions, across every
    live process of the gateway."""

    @extend_schema(responses={200: StatsOut}, summary="Connection statistics")
    async def get(self, request):
        return Response(await registry.astats())


class SendView(GatewayAPIView):
    """Send a message to a connected user or bot and stream its correlated
    replies back as Server-Sent Events.

    `event: accepted` first (`correlation_id`, `routed_to`, `online`), then an
    `event: response` per reply, ending after the one with `is_final: true`,
    or with `event: timeout`. A correlation id still waiting answers 409.
    """

    permission_classes = [SendScope]
    renderer_classes = [ORJSONRenderer, EventStreamRenderer]

    @extend_schema(
        request=SendIn,
        responses={(200, "text/event-stream"): str},
        summary="Send with reply, answered as a stream of Server-Sent Events",
    )
    async def post(self, request):
        conversation = await services.asend_with_reply(**SendIn.service_kwargs(request.data))
        response = StreamingHttpResponse(
            _event_stream(conversation), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # proxies must not hold events back
        return response


async def _event_stream(conversation):
    async for event, data in conversation.events():
        if event == "heartbeat":
            yield b": keep-alive\n\n"
        else:
            yield sse_event(event, data)


# -- The connection registry ----------------------------------------------------------
class ConnectionsView(GatewayAPIView):
    """The live connections of the whole gateway (every process), oldest
    first, filtered by `user_id`, `channel` and `transport`."""

    @extend_schema(
        parameters=[ConnectionsQuery],
        responses={200: ConnectionOut(many=True)},
        summary="List live connections",
    )
    async def get(self, request):
        query = ConnectionsQuery(data=query_data(request.query_params))
        query.is_valid(raise_exception=True)
        return Response(await registry.aconnections(**query.validated_data))


class ConnectionView(GatewayAPIView):
    """One live connection, wherever it lives."""

    @extend_schema(
        request=None,
        responses={204: None},
        summary="Close a connection (error `closed_by_admin`, close code 4000)",
    )
    async def delete(self, request, connection_id):
        await registry.aclose(connection_id=connection_id)
        return Response(status=HTTPStatus.NO_CONTENT)


class ChannelView(GatewayAPIView):
    """A channel's subscribers across the gateway; a channel nobody is in
    answers with zeros."""

    @extend_schema(responses={200: ChannelOut}, summary="A channel's subscribers and presence")
    async def get(self, request, name):
        if not is_valid_channel(name):
            raise Validation(
                "A channel name must match [A-Za-z0-9_.:=@-]{1,100}.",
                fields={"name": ["Must match [A-Za-z0-9_.:=@-]{1,100}."]},
            )
        return Response(await registry.achannel(name=name))


class UserView(GatewayAPIView):
    """Whether a user (or public account) is connected anywhere, and how."""

    @extend_schema(responses={200: UserOut}, summary="A user's live connections")
    async def get(self, request, user_id):
        if not is_valid_user_id(user_id):
            raise Validation(
                "A user id is 1 to 200 printable characters.",
                fields={"user_id": ["Must be 1 to 200 printable characters."]},
            )
        return Response(await registry.auser(user_id=user_id))


class TokensView(GatewayAPIView):
    """Mint a connection token (JWT) for a user: a backend hands it to its
    client without holding the signing key itself."""

    @extend_schema(
        request=TokenIn,
        responses={201: TokenOut},
        summary="Mint a connection token for a user",
        examples=[
            OpenApiExample("a user", {"user_id": "user1", "channels": ["private-team-*"]}),
        ],
    )
    async def post(self, request):
        body = TokenIn(data=request.data)
        body.is_valid(raise_exception=True)
        attrs = body.validated_data
        if attrs["user_id"] in await directory.aaccounts():
            raise Validation(
                "A public account connects with its own token, not a minted one.",
                fields={"user_id": ["a public account's handle"]},
            )
        try:
            token, expires_at = jwts.mint(
                user=attrs["user_id"], channels=tuple(attrs["channels"]), ttl=attrs.get("ttl")
            )
        except jwts.InvalidToken as exc:  # no signing key configured
            raise NotConfigured(str(exc)) from None
        return Response(
            {"token": token, "user_id": attrs["user_id"], "expires_at": expires_at},
            status=HTTPStatus.CREATED,
        )


# -- Seed 001's path ------------------------------------------------------------------
class InternalSendView(GatewayAPIView):
    """`POST /internal/send`: an event to one connection (`token` is its id),
    then `close: true` closes it (`server_closed`). 200 with the receipt; a
    token no live connection has answers 404."""

    permission_classes = [PushScope]

    @extend_schema(request=InternalSendIn, responses={200: ReceiptOut}, summary="Seed 001")
    async def post(self, request):
        body = InternalSendIn(data=request.data)
        body.is_valid(raise_exception=True)
        receipt = await services.asend_to_connection(**body.service_kwargs())
        if not receipt.online:
            raise NotFound("No live connection has this token.")
        return Response(receipt.as_dict(), status=HTTPStatus.OK)


# -- Seed 002's push paths ------------------------------------------------------------
class SeedPushView(GatewayAPIView):
    """A seed path whose body (`serializer_class`, which the schema reads
    too) becomes one push."""

    permission_classes = [PushScope]
    serializer_class: type

    @extend_schema(responses={202: ReceiptOut}, summary="Seed 002")
    async def post(self, request):
        body = self.serializer_class(data=request.data)
        body.is_valid(raise_exception=True)
        receipt = await services.apush(item=body.to_item())
        return Response(receipt.as_dict(), status=HTTPStatus.ACCEPTED)


class SeedBroadcastView(SeedPushView):
    """`POST /ws/broadcast`: `{"message": …}` to every connection, as a
    broadcast push whose `data` is the message."""

    serializer_class = SeedBroadcastIn


class SeedChannelMessageView(GatewayAPIView):
    """`POST /ws/send-to-channel`: `message` to a channel; `persist: false`
    reaches the live subscribers only and is never replayed."""

    permission_classes = [PushScope]

    @extend_schema(request=SeedChannelMessageIn, responses={202: ReceiptOut}, summary="Seed 002")
    async def post(self, request):
        body = SeedChannelMessageIn(data=request.data)
        body.is_valid(raise_exception=True)
        attrs = body.validated_data
        if attrs["persist"]:
            receipt = await services.apush(item=body.to_item())
        else:
            receipt = await services.apublish_live(channel=attrs["channel"], data=attrs["message"])
        return Response(receipt.as_dict(), status=HTTPStatus.ACCEPTED)


class SeedSSEChannelView(SeedPushView):
    """`POST /sse/send-to-channel`: `data` to a channel as an event named
    `event` (its `event_type`)."""

    serializer_class = SeedSSEChannelIn


class SeedNotificationView(SeedPushView):
    """`POST /sse/notification`: a `notification` event (`title`, `content`,
    `type`) to everyone, or to `user_id` or `channel`."""

    serializer_class = SeedNotificationIn
