"""An ASGI app that does nothing but hold WebSockets, on uvicorn with the
gateway's flags: the least an idle WebSocket can cost the gateway on uvicorn
(W3's "empty app" floor).

    python -m bench.peers.uvicorn_floor --port 8767

- A WebSocket on any path is accepted, gets `{"type": "welcome"}` (what the
  load generator's client waits for) and is then only read until it closes.
- `GET /health`: `{"status": "healthy", "connections": n}`; anything else 404.

uvicorn runs as `bin/serve` starts the gateway (`ASGI_SERVER=uvicorn`):
uvloop, httptools, `websockets-sansio`, no permessage-deflate, proxy headers,
no access log, no lifespan, protocol pings every 20 s (30 s timeout), 2 MiB
message cap.
"""

import argparse
import json

import uvicorn

from bench.peers.asgi import respond

WELCOME = json.dumps({"type": "welcome"}, separators=(",", ":"))
MAX_MESSAGE = 2 * 1048576  # bin/serve: twice WEBSOCKET_MAX_FRAME_BYTES

connections = 0


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await websocket(receive, send)
    elif scope["type"] == "http":
        await http(scope, send)


async def websocket(receive, send):
    global connections
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    connections += 1
    try:
        await send({"type": "websocket.send", "text": WELCOME})
        while (await receive())["type"] != "websocket.disconnect":
            pass
    finally:
        connections -= 1


async def http(scope, send):
    if scope["method"] == "GET" and scope["path"] == "/health":
        await respond(send, 200, {"status": "healthy", "connections": connections})
    else:
        await respond(send, 404, {"error": "not_found"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8767)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_ping_interval=20,
        ws_ping_timeout=30,
        ws_max_size=MAX_MESSAGE,
        proxy_headers=True,
        access_log=False,
        lifespan="off",
        log_level="warning",
    )
