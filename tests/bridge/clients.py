"""In-process clients shared by the consumer's test modules."""

import contextlib

from channels.testing import WebsocketCommunicator

from realtime.asgi import application


@contextlib.asynccontextmanager
async def ws(path: str = "/ws/?user_id=alice"):
    """A connected communicator and its welcome frame; always disconnected."""
    comm = WebsocketCommunicator(application, path)
    connected, _ = await comm.connect()
    assert connected
    try:
        welcome = await comm.receive_json_from()
        assert welcome["type"] == "welcome", welcome
        yield comm, welcome
    finally:
        await comm.disconnect()
