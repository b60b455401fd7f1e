"""The one message shape (CONTRACT section 2), encoded once per message.

A message is encoded before its id exists (the id is assigned where history
is written, possibly inside Redis), so the encoding is split: a fixed head,
the id, and the tail holding everything else. `frame()` joins them with plain
string concatenation, wherever the id is known.
"""

import time

import orjson

from .errors import Validation

HEAD = '{"type":"message","id":"'


def encode_tail(
    *,
    event_type: str,
    data,
    channel: str | None = None,
    sender: dict | None = None,
    correlation_id: str | None = None,
    ts: float | None = None,
    event_id: str | None = None,
    broadcast: bool = False,
    to_account: bool = False,
    original_sender: str | None = None,
) -> str:
    """Everything of the envelope after its id: `","event_type":...}`.

    `event_id` is the producer's own id for the event (seed 000), carried
    through when given. A broadcast says so (`"broadcast": true`): its id
    belongs to the broadcast stream, not to the personal one a client
    resumes with `since`. A copy for a public account names its
    `original_sender` (null when an API call named no user).
    """
    body = {
        "event_type": event_type,
        "data": data,
        "channel": channel,
        "from": sender,
        "correlation_id": correlation_id,
        "ts": time.time() if ts is None else ts,
    }
    if event_id is not None:
        body["event_id"] = event_id
    if broadcast:
        body["broadcast"] = True
    if to_account:
        body["original_sender"] = original_sender
    try:
        encoded = orjson.dumps(body)
    except TypeError as exc:  # orjson.JSONEncodeError: e.g. an integer past 64 bits
        raise Validation("`data` cannot be encoded as JSON.", fields={"data": [str(exc)]}) from None
    return '",' + encoded[1:].decode()


def frame(message_id: str, tail: str) -> str:
    return HEAD + message_id + tail


def live(tail: str) -> str:
    """A message that enters no history, so has no id (`"id": null`)."""
    return '{"type":"message","id":null,' + tail[2:]


def dumps(obj) -> str:
    """Encode a control frame (welcome, ack, error ...)."""
    return orjson.dumps(obj).decode()


loads = orjson.loads
