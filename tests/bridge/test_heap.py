"""A closed connection is freed by reference counting (realtime/heap.py):
full garbage collections freeze what survives them, so a connection left in
a reference cycle after closing would never be collected."""

import asyncio
import gc

import pytest

from bridge.connections import Connection
from bridge.consumers import GatewayConsumer
from bridge.hub import LocalSocket

from .clients import ws

pytestmark = pytest.mark.django_db(transaction=True)


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
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = [o for o in gc.garbage if isinstance(o, GatewayConsumer | Connection | LocalSocket)]
        assert ours == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
