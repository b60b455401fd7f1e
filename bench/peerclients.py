"""The comparison's WebSocket clients: the raw client of `bench.wsclient`
with a cheaper receive path, and a Socket.IO dialect of it.

`FastWSClient` speaks the gateway's wire format (which the `websockets`
reference server speaks too). `SioClient` speaks Engine.IO v4 / Socket.IO v5
over the same raw WebSocket (`bench.engineio`): the open packet, `40` and
its answer (the "welcome"), pings answered with pongs, events and acks.
"""

import itertools
import time
from collections.abc import Callable

from . import engineio
from .wsclient import WSClient

SIO_MESSAGE_PREFIX = b'42["message",'


class FastWSClient(WSClient):
    """`WSClient` with a shortcut for the common case: one whole unmasked
    text frame of under 64 KiB per read, nothing buffered. Anything else
    takes the general path. `heard` counts what the recorder took from it."""

    heard = 0

    def data_received(self, data: bytes) -> None:
        if self._handshaken and not self._buf and self._fragments is None:
            n = len(data)
            if n >= 2 and data[0] == 0x81:
                b1 = data[1]
                if b1 < 126:
                    if n == 2 + b1:
                        self._text(data[2:], time.monotonic())
                        return
                elif b1 == 126 and n >= 4 and n == 4 + ((data[2] << 8) | data[3]):
                    self._text(data[4:], time.monotonic())
                    return
        super().data_received(data)

    def send_raw(self, payload: bytes) -> None:
        """Send one text frame as it is."""
        self._frame(0x1, payload)


class SioClient(FastWSClient):
    """A Socket.IO client on the default namespace, websocket transport only.

    `welcomed` resolves with the namespace's connect answer (`40{"sid":..}`).
    Messages of the event `message` go to the sink as the raw frame (the
    recorders decode it); other events go to `on_event(client, packet, now)`;
    acks to the callback given to `emit`.
    """

    path_template = "/socket.io/?EIO=4&transport=websocket&user_id={user}"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sid: str | None = None
        self.open_packet: dict | None = None
        self.on_event: Callable | None = None
        self._acks: dict[int, Callable] = {}
        self._ack_ids = itertools.count()

    def _text(self, payload: bytes, now: float) -> None:
        if payload.startswith(SIO_MESSAGE_PREFIX):
            self.sink.on_message(self, payload, now)
            return
        kind = payload[:1]
        if kind == b"2":  # Engine.IO ping: answer at once
            self._frame(0x1, engineio.PONG)
            return
        try:
            packet = engineio.decode(payload)
        except ValueError as exc:
            self.errors.append({"code": "bad_packet", "message": str(exc)})
            return
        if packet.eio == engineio.EIO_OPEN:
            self.open_packet = packet.data
            self._frame(0x1, engineio.CONNECT_DEFAULT)
        elif packet.eio == engineio.EIO_CLOSE:
            self.transport.close()
        elif packet.eio == engineio.EIO_MESSAGE:
            if packet.sio == engineio.ACK:
                callback = self._acks.pop(packet.ack_id, None)
                if callback is not None:
                    callback(packet.args, now)
            elif packet.sio == engineio.EVENT:
                if self.on_event is not None:
                    self.on_event(self, packet, now)
                elif packet.event == "message":
                    self.sink.on_message(self, payload, now)
            elif packet.sio == engineio.CONNECT:
                self.sid = (packet.data or {}).get("sid")
                if not self.welcomed.done():
                    self.welcomed.set_result(packet.data)
            elif packet.sio == engineio.CONNECT_ERROR:
                self.errors.append({"code": "connect_error", "message": str(packet.data)})
                self._fail(f"connect error: {packet.data}")
            elif packet.sio == engineio.DISCONNECT:
                self.transport.close()

    def emit(self, name: str, *args, ack: Callable | None = None) -> None:
        """Send an event; `ack(args, now)` is called with the server's acknowledgement."""
        ack_id = None
        if ack is not None:
            ack_id = next(self._ack_ids)
            self._acks[ack_id] = ack
        self._frame(0x1, engineio.event(name, *args, ack_id=ack_id))

    def answer(self, ack_id: int, *args) -> None:
        self._frame(0x1, engineio.ack(ack_id, *args))

    @property
    def awaiting_acks(self) -> int:
        return len(self._acks)
