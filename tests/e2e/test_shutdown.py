"""SIGTERM on one gateway process, on both servers: every WebSocket gets
`server_shutdown` and 1001, every event stream an `error` event, then the
process exits cleanly."""

import contextlib
import signal

import httpx
import pytest

from tests.servers import start_gateway, ws_client, ws_url
from tests.sse import open_events


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
async def test_sigterm_closes_every_connection_1001_first(server, tmp_path, unique):
    gateway = start_gateway(tmp_path, ASGI_SERVER=server)
    try:
        async with (
            httpx.AsyncClient(base_url=gateway.http, timeout=10) as http,
            open_events(http, params={"user_id": unique("sse")}) as stream,
            ws_client(ws_url(gateway, user_id=unique("ws"))) as one,
            ws_client(ws_url(gateway, user_id=unique("ws"))) as two,
        ):
            gateway.proc.send_signal(signal.SIGTERM)
            for ws in (one, two):
                code, frames = await ws.closed()
                assert code == 1001
                assert [f["code"] for f in frames] == ["server_shutdown"]
            events = []
            with contextlib.suppress(StopAsyncIteration):
                while True:
                    events.append(await stream.next())
            assert [(e.name, e.data["code"]) for e in events] == [("error", "server_shutdown")]
        # uvicorn re-raises the signal once its shutdown is done, to exit as
        # the signal asked; Daphne exits 0.
        clean = 0 if server == "daphne" else -signal.SIGTERM
        assert gateway.proc.wait(15) == clean
    finally:
        gateway.stop(signal.SIGKILL)
