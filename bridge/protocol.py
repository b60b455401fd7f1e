"""Client frames: their actions, the seed aliases, and what each must carry.

`parse()` turns a text frame into a validated `Request`; the consumer maps
the action to a handler. Nothing here sends or touches a socket.
"""

from dataclasses import dataclass

import orjson

from . import addressing
from .errors import InvalidJSON, UnknownAction, Validation

# alias -> action (CONTRACT section 3; seed 002 and 004 names)
ALIASES = {
    "send_to_channel": "publish",
    "chat_message": "publish",
    "send_to_user": "send",
    "join_room": "subscribe",
    "leave_room": "unsubscribe",
}
ACTIONS = {
    "ping",
    "pong",
    "subscribe",
    "unsubscribe",
    "publish",
    "send",
    "response",
    "typing",
    "presence",
}
# Seed 004's frame kinds: a client that sends one in seed 004's shape
# (`{"type": …, "data": {"room": …}}`) is answered in seed 004's frames
# (bridge/dialects.py).
SEED004 = {"join_room", "leave_room", "chat_message", "typing"}
EVENT_TYPE_MAX = 100
CORRELATION_MAX = 200


@dataclass(slots=True)
class Request:
    action: str
    request_id: object
    fields: dict
    dialect: str | None = None  # "seed004" for a frame in seed 004's shape


def parse(text: str) -> Request:
    """Decode and validate one client frame."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"The frame is not valid JSON: {exc}.") from None
    if not isinstance(frame, dict):
        raise Validation("A frame is a JSON object with an `action`.")
    request_id = frame.get("request_id")
    name = frame.get("action", frame.get("type"))
    if not isinstance(name, str):
        err = Validation("A frame needs an `action` (or `type`).", fields={"action": ["required"]})
        err.request_id = request_id
        raise err
    action = ALIASES.get(name, name)
    if action not in ACTIONS:
        err = UnknownAction(
            f"Unknown action {name[:50]!r}; known: {', '.join(sorted(ACTIONS | set(ALIASES)))}."
        )
        err.request_id = request_id
        raise err
    dialect = "seed004" if name in SEED004 and _in_a_room(frame) else None
    try:
        fields = VALIDATORS[action](_lifted(action, frame))
    except Validation as err:
        err.request_id = request_id
        raise
    return Request(action, request_id, fields, dialect)


def _in_a_room(frame: dict) -> bool:
    data = frame.get("data")
    return "action" not in frame and isinstance(data, dict) and "room" in data


def _lifted(action: str, frame: dict) -> dict:
    """Seeds 002 and 004 carry the fields in `data` (`{"action": "subscribe",
    "data": {"channel": …}}`, `{"type": "chat_message", "data": {"room": …,
    "content": …}}`): bring the address up, and leave the rest as the data."""
    data = frame.get("data")
    if not isinstance(data, dict):
        return frame
    lifted = dict(frame)
    rest = dict(data)
    if action == "send":
        if "to" not in frame and "user_id" not in frame and "user_id" in rest:
            lifted["to"] = rest.pop("user_id")
    elif "channel" not in frame and "room" not in frame:
        for key in ("channel", "room"):
            if key in rest:
                lifted["channel"] = rest.pop(key)
                break
        if action == "typing" and "is_typing" not in frame and "is_typing" in rest:
            lifted["is_typing"] = rest.pop("is_typing")
    if len(rest) != len(data):
        lifted["data"] = rest
    return lifted


def _channel(frame: dict) -> str:
    channel = frame.get("channel", frame.get("room"))
    if not addressing.is_valid_channel(channel):
        raise Validation(
            "`channel` must match [A-Za-z0-9_.:=@-]{1,100}.", fields={"channel": ["invalid"]}
        )
    return channel


def _event_type(frame: dict) -> str:
    event_type = frame.get("event_type", "message")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= EVENT_TYPE_MAX:
        raise Validation(
            f"`event_type` must be a string of 1 to {EVENT_TYPE_MAX} characters.",
            fields={"event_type": ["invalid"]},
        )
    return event_type


def _correlation_id(frame: dict) -> str | None:
    value = frame.get("correlation_id")
    if value is None and isinstance(frame.get("data"), dict):
        value = frame["data"].get("correlation_id")
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= CORRELATION_MAX:
        raise Validation(
            f"`correlation_id` must be a string of 1 to {CORRELATION_MAX} characters.",
            fields={"correlation_id": ["invalid"]},
        )
    return value


def _nothing(frame: dict) -> dict:
    return {}


def _subscribe(frame: dict) -> dict:
    return {"channel": _channel(frame), "since": frame.get("since")}


def _unsubscribe(frame: dict) -> dict:
    return {"channel": _channel(frame)}


def _publish(frame: dict) -> dict:
    if "data" not in frame and "message" in frame:  # seed 004's chat_message
        frame["data"] = {"message": frame["message"]}
    return {"channel": _channel(frame), "data": frame.get("data"), "event_type": _event_type(frame)}


def _send(frame: dict) -> dict:
    to = frame.get("to", frame.get("user_id"))
    if not addressing.is_valid_user_id(to):
        raise Validation("`to` must name a user.", fields={"to": ["invalid"]})
    return {
        "to": to,
        "data": frame.get("data"),
        "event_type": _event_type(frame),
        "correlation_id": _correlation_id(frame),
    }


def _response(frame: dict) -> dict:
    correlation_id = _correlation_id(frame)
    if correlation_id is None:
        raise Validation(
            "A response needs the `correlation_id` it answers.",
            fields={"correlation_id": ["required"]},
        )
    data = frame.get("data")
    is_final = frame.get("is_final")
    if is_final is None:  # seed 000 may put it in data
        is_final = data.get("is_final", False) if isinstance(data, dict) else False
    if not isinstance(is_final, bool):
        raise Validation("`is_final` must be true or false.", fields={"is_final": ["invalid"]})
    return {"correlation_id": correlation_id, "data": data, "is_final": is_final}


def _typing(frame: dict) -> dict:
    is_typing = frame.get("is_typing", True)
    if not isinstance(is_typing, bool):
        raise Validation("`is_typing` must be true or false.", fields={"is_typing": ["invalid"]})
    return {"channel": _channel(frame), "is_typing": is_typing}


def _presence(frame: dict) -> dict:
    return {"channel": _channel(frame)}


VALIDATORS = {
    "typing": _typing,
    "presence": _presence,
    "ping": _nothing,
    "pong": _nothing,
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "publish": _publish,
    "send": _send,
    "response": _response,
}
