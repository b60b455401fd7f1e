"""Control events between processes, on the backend's control channel of the
process they are meant for: a reply for a correlation waiter, or an event for
one connection (close it; a frame for it alone). One message per event,
whatever the process holds: a connection has an address, not a channel of
its own.
"""

from . import replies
from .backends import get_backend
from .errors import BridgeError
from .instance import INSTANCE_ID

CLOSE_EVENT = "bridge.close"  # `code`, `error`, `message`: end the connection so
FRAME_EVENT = "bridge.frame"  # `text`: an encoded message for that connection alone


def address(connection_id: str) -> str:
    """Where a connection of this process is reached from any process."""
    return f"{INSTANCE_ID}!{connection_id}"


async def send(address: str, event: dict) -> None:
    """Hand `event` to the connection at `address`, on whichever process it lives."""
    process, _, connection_id = address.partition("!")
    await get_backend().send_control(process, {**event, "connection": connection_id})


def close_error(event: dict) -> BridgeError:
    """The error a CLOSE_EVENT ends its connection with."""
    error = BridgeError(event.get("message") or "Closed by the gateway.")
    error.code = event["error"]
    error.close_code = event["code"]
    return error


def dispatch(backend, payload: dict) -> None:
    """A control message reached this process: hand it to its waiter or connection."""
    if payload.get("type") == "response":
        replies.deliver(backend, payload)
        return
    conn = backend.hub.connections.get(payload["connection"])
    if conn is not None:
        conn.control(payload)
