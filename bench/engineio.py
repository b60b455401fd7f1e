"""A tiny Engine.IO v4 / Socket.IO v5 codec: the text packets of the
WebSocket transport, enough for the comparison's load generator to talk to
python-socketio without its client (which costs far too much per frame for
thousands of clients in one process).

One WebSocket text frame is one Engine.IO packet: a type digit, then its data.

    0{"sid":..,"pingInterval":..}   open (server -> client, first frame)
    1                               close
    2 / 3                           ping (server) / pong (client answer)
    4<socket.io packet>             message

A Socket.IO packet (inside an Engine.IO message) is a type digit, an
optional namespace (`/name,`; the default `/` is left out), an optional ack
id (digits), then JSON:

    0{"sid":..}   connect (client sends `40`; the server answers `40{"sid":..}`)
    1             disconnect
    2[...]        event: `42["name",arg,...]`, `42<id>[...]` wants an ack
    3[...]        ack: `43<id>[arg,...]`
    4{...}        connect error

Binary packets (types 5 and 6) are not supported: the benchmark sends none.
"""

from dataclasses import dataclass
from typing import Any

import orjson

# Engine.IO packet types.
EIO_OPEN, EIO_CLOSE, EIO_PING, EIO_PONG, EIO_MESSAGE, EIO_UPGRADE, EIO_NOOP = range(7)
# Socket.IO packet types.
CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)

PONG = b"3"
CONNECT_DEFAULT = b"40"  # connect to the default namespace


@dataclass
class Packet:
    eio: int  # Engine.IO type
    sio: int | None = None  # Socket.IO type (Engine.IO messages only)
    namespace: str = "/"
    ack_id: int | None = None
    data: Any = None  # the open payload, or the Socket.IO JSON

    @property
    def event(self) -> str | None:
        """The event name of an EVENT packet."""
        if self.sio == EVENT and isinstance(self.data, list) and self.data:
            return self.data[0]
        return None

    @property
    def args(self) -> list:
        """An event's arguments (after its name), or an ack's."""
        if not isinstance(self.data, list):
            return []
        return self.data[1:] if self.sio == EVENT else self.data


def decode(frame: bytes | str) -> Packet:
    """One WebSocket text frame of the Engine.IO websocket transport."""
    if isinstance(frame, str):
        frame = frame.encode()
    if not frame or not 48 <= frame[0] <= 54:
        raise ValueError(f"not an Engine.IO packet: {frame[:40]!r}")
    eio = frame[0] - 48
    rest = frame[1:]
    if eio != EIO_MESSAGE:
        return Packet(eio, data=orjson.loads(rest) if rest[:1] == b"{" else rest.decode() or None)
    if not rest or not 48 <= rest[0] <= 54:
        raise ValueError(f"not a Socket.IO packet: {frame[:40]!r}")
    sio = rest[0] - 48
    if sio in (BINARY_EVENT, BINARY_ACK):
        raise ValueError("binary Socket.IO packets are not supported")
    pos, size = 1, len(rest)
    namespace = "/"
    if pos < size and rest[pos] == 47:  # "/"
        comma = rest.find(b",", pos)
        end = size if comma < 0 else comma
        namespace = rest[pos:end].decode()
        pos = end + 1
    start = pos
    while pos < size and 48 <= rest[pos] <= 57:
        pos += 1
    ack_id = int(rest[start:pos]) if pos > start else None
    data = orjson.loads(rest[pos:]) if pos < size else None
    return Packet(EIO_MESSAGE, sio, namespace, ack_id, data)


def encode(sio: int, data: Any = None, *, ack_id: int | None = None, namespace: str = "/") -> bytes:
    """A Socket.IO packet inside an Engine.IO message, as a frame's bytes."""
    out = b"4" + str(sio).encode()
    if namespace != "/":
        out += namespace.encode() + b","
    if ack_id is not None:
        out += str(ack_id).encode()
    if data is not None:
        out += orjson.dumps(data)
    return out


def event(name: str, *args, ack_id: int | None = None, namespace: str = "/") -> bytes:
    """`42["name",arg,...]`; with `ack_id` the receiver is asked to acknowledge."""
    return encode(EVENT, [name, *args], ack_id=ack_id, namespace=namespace)


def ack(ack_id: int, *args, namespace: str = "/") -> bytes:
    """`43<id>[arg,...]`: the answer to an event sent with that ack id."""
    return encode(ACK, list(args), ack_id=ack_id, namespace=namespace)
