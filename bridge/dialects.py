"""Seed 004's frames, for the clients written against it.

A connection whose client speaks seed 004 (`{"type": "join_room", "data":
{"room": …}}`) gets its frames rewritten on the way out: channel messages
become `new_message`, presence events `user_joined` / `user_left`, typing
`user_typing`, `subscribed` / `unsubscribed` `room_joined` / `room_left`.
Everything else goes out as the contract has it. Only such connections pay
for the rewrite; every other socket gets the shared frame as it is.
"""

import orjson

from . import envelope


def _seed004(frame: dict) -> dict | None:
    kind = frame.get("type")
    if kind == "message" and frame.get("channel") is not None:
        data = frame.get("data")
        content = data.get("content", data) if isinstance(data, dict) else data
        sender = next(iter((frame.get("from") or {}).values()), None)
        return {
            "type": "new_message",
            "id": frame["id"],
            "data": {
                "room": frame["channel"],
                "content": content,
                "sender_id": sender,
                "sender_name": sender,
            },
            "timestamp": frame.get("ts"),
        }
    if kind == "presence" and frame.get("event") in ("join", "leave"):
        name = "user_joined" if frame["event"] == "join" else "user_left"
        return {"type": name, "data": {"user_id": frame["user"], "room": frame["channel"]}}
    if kind == "typing":
        return {
            "type": "user_typing",
            "data": {
                "user_id": frame["user"],
                "room": frame["channel"],
                "is_typing": frame["is_typing"],
            },
        }
    if kind in ("subscribed", "unsubscribed"):
        name = "room_joined" if kind == "subscribed" else "room_left"
        return {**frame, "type": name, "data": {"room": frame["channel"]}}
    if kind == "error":
        return {**frame, "data": {"message": frame.get("message")}}
    return frame


def seed004(message: dict) -> dict:
    """Rewrite one outgoing WebSocket frame in seed 004's shape."""
    frame = orjson.loads(message["text"])
    return {"type": "websocket.send", "text": envelope.dumps(_seed004(frame))}
