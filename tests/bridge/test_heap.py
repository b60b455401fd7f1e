"""Closed connections and answered requests are freed by reference counting
(realtime/heap.py): full garbage collections freeze what survives them, so
an object left in a reference cycle would never be collected."""

import asyncio
import gc

import httpx
import pytest
from django.core.handlers.asgi import ASGIRequest
from rest_framework.request import Request

from bridge.api.views import PushView
from bridge.connections import Connection
from bridge.consumers import GatewayConsumer
from bridge.hub import LocalSocket
from realtime.asgi import application

from .clients import ws

pytestmark = pytest.mark.django_db(transaction=True)


def _cyclic_garbage(*types) -> list:
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    return [o for o in gc.garbage if isinstance(o, types)]


async def test_a_closed_websocket_leaves_no_reference_cycle():
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            async with ws("/ws/?user_id=alice") as (comm, _):
                await comm.send_json_to({"action": "subscribe", "channel": "news"})
                assert (await comm.receive_json_from())["type"] == "subscribed"
            del comm
        await asyncio.sleep(0.05)  # the unregistrations that follow a close
        assert _cyclic_garbage(GatewayConsumer, Connection, LocalSocket) == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_an_answered_push_leaves_no_reference_cycle():
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        gc.collect()
        gc.disable()
        try:
            for _ in range(3):
                r = await client.post("/api/v1/push", json={"user_id": "alice", "data": 1})
                assert r.status_code == 202
            assert _cyclic_garbage(PushView, Request, ASGIRequest) == []
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
