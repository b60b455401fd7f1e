"""python-socketio on uvicorn: the reference for "what the usual Python
realtime stack does on this machine".

    python -m bench.peers.socketio_server --port 8766

Written as a python-socketio user writes it: `socketio.AsyncServer` in ASGI
mode, wrapped in `socketio.ASGIApp` with a small ASGI HTTP app beside it, the
standard library's `json`, served by uvicorn (uvloop, httptools, the
`websockets-sansio` WebSocket implementation, no access log), default
Engine.IO settings (ping every 25 s).

Socket.IO (default namespace):
- connect with `?user_id=U` in the query string (or `{"user_id": U}` as the
  auth payload): the socket enters room `user:U`; a connection named `ci_bot`
  (or another bot) is remembered as that bot.
- `subscribe` (a channel name): enter room `ch:<channel>`; the ack says so.
- `publish` ({channel, data}): `emit("message", data, room="ch:<channel>")`.
- `send` ({to, data, timeout}): `await sio.call("request", data, to=<bot's sid>)`
  and acknowledge the caller with the bot's reply (send with reply over the
  socket).
- the bot answers `request` events with an ack: that ack is the reply.

HTTP beside it:
- `POST /push` {user_id, data}: emit "message" to room `user:<id>`; `202`.
- `POST /push/batch` [{user_id, data}, ...]: the same for each item; `202`.
- `POST /send` {user_id, data, timeout}: `await sio.call("request", data,
  to=<bot's sid>, timeout=...)`; `200 {"reply": ...}` with the bot's single
  reply (a JSON answer, not an event stream as the gateway's `/api/v1/send`
  is: a Socket.IO ack carries one reply), `504` on timeout, `404` when the bot
  is not connected.
- `GET /health`: `{"status": "healthy", "connections": n}`.
"""

import argparse
import json
from urllib.parse import parse_qs

import socketio
import uvicorn
from socketio.exceptions import ConnectionRefusedError, TimeoutError

from bench.peers.asgi import respond

BOTS = {"ci_bot", "email_bot", "notification_bot", "system_bot"}

sio = socketio.AsyncServer(async_mode="asgi")
bots: dict[str, str] = {}  # bot name -> sid of its connection
connections = 0


@sio.event
async def connect(sid, environ, auth):
    global connections
    query = parse_qs(environ.get("QUERY_STRING", ""))
    user = (query.get("user_id") or [None])[0] or (auth or {}).get("user_id")
    if not user:
        raise ConnectionRefusedError("user_id is required")
    await sio.save_session(sid, {"user": user})
    await sio.enter_room(sid, f"user:{user}")
    if user in BOTS:
        bots[user] = sid
    connections += 1


@sio.event
async def disconnect(sid, reason):
    global connections
    connections -= 1
    session = await sio.get_session(sid)
    if bots.get(session["user"]) == sid:
        del bots[session["user"]]


@sio.event
async def subscribe(sid, channel):
    await sio.enter_room(sid, f"ch:{channel}")
    return {"subscribed": channel}


@sio.event
async def unsubscribe(sid, channel):
    await sio.leave_room(sid, f"ch:{channel}")
    return {"unsubscribed": channel}


@sio.event
async def publish(sid, payload):
    await sio.emit("message", payload["data"], room=f"ch:{payload['channel']}")


@sio.event
async def send(sid, payload):
    bot = bots.get(str(payload.get("to", "")).removeprefix("@"))
    if bot is None:
        return {"error": "offline"}
    try:
        return await sio.call(
            "request", payload.get("data"), to=bot, timeout=payload.get("timeout", 30)
        )
    except TimeoutError:
        return {"error": "timeout"}


# -- the HTTP API beside it ----------------------------------------------------------


async def read_body(receive) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def http_app(scope, receive, send):
    if scope["type"] != "http":
        return
    method, path = scope["method"], scope["path"]
    if method == "GET" and path == "/health":
        await respond(send, 200, {"status": "healthy", "connections": connections})
        return
    if method != "POST" or path not in ("/push", "/push/batch", "/send"):
        await respond(send, 404, {"error": "not_found"})
        return
    try:
        payload = json.loads(await read_body(receive))
    except ValueError:
        await respond(send, 400, {"error": "invalid_json"})
        return
    if path == "/push":
        await sio.emit("message", payload["data"], room=f"user:{payload['user_id']}")
        await respond(send, 202, {"accepted": 1})
    elif path == "/push/batch":
        for item in payload:
            await sio.emit("message", item["data"], room=f"user:{item['user_id']}")
        await respond(send, 202, {"accepted": len(payload)})
    else:
        bot = bots.get(payload["user_id"])
        if bot is None:
            await respond(send, 404, {"error": "offline"})
            return
        try:
            reply = await sio.call(
                "request", payload.get("data"), to=bot, timeout=payload.get("timeout", 30)
            )
        except TimeoutError:
            await respond(send, 504, {"error": "timeout"})
            return
        await respond(send, 200, {"reply": reply})


app = socketio.ASGIApp(sio, other_asgi_app=http_app)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        log_level="warning",
        access_log=False,
    )
