"""A live connection's life in the core: open, subscribe, unsubscribe, close.

Transport-neutral: the WebSocket consumer (and later the SSE view) owns the
socket and hands its ASGI `send` here; this module registers it, makes it hear
its streams, and replays what it missed without gaps or duplicates.
"""

import asyncio
import contextlib
import logging
import uuid

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from accounts.identity import Principal
from accounts.models import PublicAccount

from . import addressing, envelope, metrics
from .backends import get_backend
from .errors import DuplicateConnection, Replaced, Validation
from .history import parse_id
from .hub import LocalSocket

log = logging.getLogger(__name__)

CLOSE_EVENT = "bridge.close"


def parse_since(value) -> tuple[int, int] | None:
    """The key of a `since` id; a malformed one is a validation error."""
    if value is None or value == "":
        return None
    key = parse_id(value)
    if key is None:
        raise Validation(
            "`since` must be a message id such as 1704067200123-0.",
            fields={"since": ["not a message id"]},
        )
    return key


async def close_remote(channel_name: str, error_class) -> None:
    """Ask a connection, on whichever process it lives, to close itself."""
    await get_channel_layer().send(
        channel_name,
        {
            "type": CLOSE_EVENT,
            "code": error_class.close_code,
            "error": error_class.code,
            "message": error_class.default_message,
        },
    )


async def aconnection_counts(users: list[str]) -> dict[str, int]:
    """How many live connections each of `users` has, across processes."""
    backend = get_backend()
    return {user: len(await backend.user_connections(user)) for user in users}


async def aclose_all(user: str, error_class) -> int:
    """Close every live connection of `user`, wherever it lives."""
    connections = await get_backend().user_connections(user)
    for channel_name in connections.values():
        await close_remote(channel_name, error_class)
    return len(connections)


class Connection:
    def __init__(
        self, *, principal: Principal, channel_name: str, send, transport: str, on_overflow
    ):
        self.id = uuid.uuid4().hex
        self.principal = principal
        self.channel_name = channel_name
        self.transport = transport
        self.channels: set[str] = set()
        self.sock = LocalSocket(
            send, max_backlog=settings.WEBSOCKET_SEND_QUEUE, on_overflow=on_overflow
        )
        self.backend = get_backend()
        self.opened = False

    @property
    def personal_stream(self) -> str:
        return addressing.user_stream(self.principal.user)

    async def aopen(self, *, since: tuple[int, int] | None) -> None:
        """Apply the duplicate policy, go live, greet, then replay the gap."""
        user = self.principal.user
        policy = settings.WS_DUPLICATE_POLICY
        if policy != "allow":
            existing = await self.backend.user_connections(user)
            if existing and policy == "reject":
                raise DuplicateConnection()
            for channel_name in existing.values():
                await close_remote(channel_name, Replaced)
        self.sock.hold()
        self.backend.hub.add(self.sock)
        self.opened = True
        metrics.CONNECTIONS.labels(self.transport).inc()
        await self.backend.attach(self.sock, [self.personal_stream, addressing.BROADCAST])
        await self.backend.register(
            user=user, connection_id=self.id, channel_name=self.channel_name
        )
        if self.principal.is_account:
            await sync_to_async(PublicAccount.touch)(user)
        pending = await self.backend.take_pending(user)
        if since is not None:
            missed = await self.backend.replay(self.personal_stream, after=since)
        elif pending is not None:
            missed = await self.backend.replay(self.personal_stream, start=pending)
        else:
            missed = []
        self.sock.write(
            _text(
                {
                    "type": "welcome",
                    "connection_id": self.id,
                    "user": user,
                    "heartbeat_interval": settings.WEBSOCKET_HEARTBEAT_INTERVAL,
                    "replayed": len(missed),
                }
            )
        )
        self._replay(self.personal_stream, missed)

    def _replay(self, stream: str, missed: list[tuple[str, str]]) -> None:
        for _, text in missed:
            self.sock.write({"type": "websocket.send", "text": text})
        self.sock.release(stream, parse_id(missed[-1][0]) if missed else None)

    async def asubscribe(self, *, channel: str, since: tuple[int, int] | None) -> int:
        """Join a channel, replaying what came after `since`; returns the replay count."""
        if channel in self.channels:
            return 0
        if len(self.channels) >= settings.MAX_SUBSCRIPTIONS:
            raise Validation(
                f"At most {settings.MAX_SUBSCRIPTIONS} subscriptions per connection.",
                fields={"channel": ["too many subscriptions"]},
            )
        stream = addressing.channel_stream(channel)
        self.sock.hold()
        self.channels.add(channel)
        try:
            await self.backend.attach(self.sock, [stream])
            missed = await self.backend.replay(stream, after=since) if since is not None else []
        except BaseException:
            self.channels.discard(channel)
            self.sock.release()
            with contextlib.suppress(Exception):
                await self.backend.detach(self.sock, [stream])
            raise
        self._replay(stream, missed)
        return len(missed)

    async def aunsubscribe(self, *, channel: str) -> None:
        if channel not in self.channels:
            return
        self.channels.discard(channel)
        await self.backend.detach(self.sock, [addressing.channel_stream(channel)])

    def send_frame(self, frame: dict) -> None:
        """Queue a control frame behind whatever this socket is already sending."""
        self.sock.write(_text(frame))

    def close(self) -> None:
        """Forget this connection everywhere. Safe to call more than once, and
        from a cancelled task: the local part is immediate, the rest follows."""
        if not self.opened:
            return
        self.opened = False
        self.sock.closed = True
        metrics.CONNECTIONS.labels(self.transport).dec()
        self.backend.forget(self.sock)
        _in_background(self.backend.unregister(user=self.principal.user, connection_id=self.id))
        if self.principal.is_account:
            _in_background(sync_to_async(PublicAccount.touch)(self.principal.user))


_background: set[asyncio.Task] = set()


def _in_background(coro) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _text(frame: dict) -> dict:
    return {"type": "websocket.send", "text": envelope.dumps(frame)}
