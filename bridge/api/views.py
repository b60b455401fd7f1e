"""The HTTP transport: parse, call one service, render."""

import inspect
from http import HTTPStatus

from adrf.views import APIView
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework.response import Response

from .. import registry, services
from .codec import EventStreamRenderer, ORJSONRenderer, sse_event
from .serializers import (
    BatchOut,
    PublicAccountOut,
    PushIn,
    ReceiptOut,
    SendIn,
    StatsOut,
    validate_batch,
)


class GatewayAPIView(APIView):
    """An async DRF view that runs DRF's `initial()` on the event loop.

    adrf hops to a thread for it; here it only negotiates content and checks
    permissions that need no database, so the hop is pure cost.
    """

    async def async_dispatch(self, request, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            self.initial(request, *args, **kwargs)
            handler = getattr(self, request.method.lower(), self.http_method_not_allowed)
            response = handler(request, *args, **kwargs)
            if inspect.isawaitable(response):  # DRF's own options() is sync
                response = await response
        except Exception as exc:  # noqa: BLE001 (DRF renders or re-raises it)
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response


class PushView(GatewayAPIView):
    """Push one message to a user, a channel or every connection.

    Answers 202 with the message id, the number of connections it was written
    to, whether the target was online, and whether it was kept for later.
    """

    @extend_schema(
        request=PushIn,
        responses={202: ReceiptOut},
        summary="Push a message to a user, a channel or everyone",
        examples=[OpenApiExample("to a user", {"user_id": "user1", "data": {"text": "Hello!"}})],
    )
    async def post(self, request):
        body = PushIn(data=request.data)
        body.is_valid(raise_exception=True)
        receipt = await services.apush(item=body.to_item())
        return Response(receipt.as_dict(), status=HTTPStatus.ACCEPTED)


class PushBatchView(GatewayAPIView):
    """Push up to BATCH_MAX messages in one request.

    Every item is validated first: one bad item answers 422 with `fields`
    keyed by its index, and nothing is delivered.
    """

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

    renderer_classes = [ORJSONRenderer, EventStreamRenderer]

    @extend_schema(
        request=SendIn,
        responses={(200, "text/event-stream"): str},
        summary="Send with reply, answered as a stream of Server-Sent Events",
    )
    async def post(self, request):
        body = SendIn(data=request.data)
        body.is_valid(raise_exception=True)
        conversation = await services.asend_with_reply(**body.service_kwargs())
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
