"""A live connection's life in the core: open, subscribe, unsubscribe, close.

Transport-neutral: the WebSocket consumer and the SSE stream own their socket
and hand it here as a `LocalSocket`; this module registers it, makes it hear
its streams, and replays what it missed without gaps or duplicates.
"""

import asyncio
import contextlib
import logging
import time
import uuid

from channels.db import database_sync_to_async
from django.conf import settings

from accounts.identity import Principal
from accounts.models import PublicAccount

from . import addressing, callbacks, control, envelope, heartbeats, metrics, presence
from .backends import get_backend
from .errors import (
    DuplicateConnection,
    ForbiddenAction,
    Replaced,
    ServerShutdown,
    TooManyConnections,
    TooManyUserConnections,
    Validation,
)
from .history import parse_id
from .hub import LocalSocket
from .instance import INSTANCE_ID

log = logging.getLogger(__name__)


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


async def close_remote(address: str, error_class) -> None:
    """Ask a connection, on whichever process it lives, to close itself."""
    await control.send(
        address,
        {
            "type": control.CLOSE_EVENT,
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
    for address in connections.values():
        await close_remote(address, error_class)
    return len(connections)


class Connection:
    """One live connection of any transport: what it hears, and its place in
    the registry. The transport owns the socket and hands its `LocalSocket`."""

    def __init__(self, *, principal: Principal, sock: LocalSocket, transport: str):
        self.id = uuid.uuid4().hex
        self.principal = principal
        # Where control events for it go (`send_control`), from any process.
        self.address = control.address(self.id)
        self.transport = transport
        self.channels: set[str] = set()
        self.sock = sock
        sock.owner = self.id
        sock.member = None if principal.is_anonymous else principal.user
        self.backend = get_backend()
        self.opened = False
        self.connected_at = time.time()
        # When the client last sent a frame; the registry learns it once per
        # heartbeat tick (bridge.heartbeats), never once per frame.
        self.last_seen = self.connected_at
        # Set by the transport: `await end(error)` tells the client why, then
        # closes (heartbeat timeout, shutdown, a close sent to its address).
        self.end = None

    def record(self) -> dict:
        """What the registry shows of this connection, on every process."""
        principal = self.principal
        return {
            "id": self.id,
            "user": None if principal.is_anonymous else principal.user,
            "kind": principal.kind,
            "transport": self.transport,
            "instance": INSTANCE_ID,
            "channels": sorted(self.channels),
            "connected_at": self.connected_at,
            "last_seen": self.last_seen,
            # Internal: how `DELETE connections/{id}` reaches it (never shown).
            "address": self.address,
        }

    def control(self, event: dict) -> None:
        """A control event sent to its address: a frame for it alone, or an
        order to close, which its transport carries out its own way."""
        if event["type"] == control.FRAME_EVENT:
            self.sock.write({"type": "websocket.send", "text": event["text"]})
        elif self.end is not None:
            in_background(self.end(control.close_error(event)))

    @property
    def personal_stream(self) -> str | None:
        if self.principal.is_anonymous:
            return None
        return addressing.user_stream(self.principal.user)

    async def aopen(
        self,
        *,
        after: dict[str, tuple[int, int]] | None = None,
        channels: list[str] = (),
    ) -> None:
        """Apply the duplicate policy, go live on the personal stream, the
        broadcast stream and `channels`, greet, then replay what came after
        each stream's position in `after` (or the personal stream's offline
        messages) without gaps or duplicates."""
        after = after or {}
        user = self.principal.user
        self._check_subscriptions(len(channels))
        if self.backend.hub.counts[self.transport] >= max_connections(self.transport):
            raise TooManyConnections()
        if heartbeats.draining():
            raise ServerShutdown()
        await self._check_user_connections(user)
        if settings.WS_DUPLICATE_POLICY != "allow" and self.transport == "websocket":
            existing = await self.backend.user_connections(user, transport="websocket")
            if existing and settings.WS_DUPLICATE_POLICY == "reject":
                raise DuplicateConnection()
            for address in existing.values():
                await close_remote(address, Replaced)
        personal = self.personal_stream
        streams = [s for s in (personal, addressing.BROADCAST) if s is not None]
        streams += [addressing.channel_stream(c) for c in channels]
        self.sock.hold()
        self.backend.hub.add(self.sock)
        self.backend.hub.connections[self.id] = self
        self.backend.hub.counts[self.transport] += 1
        self.opened = True
        heartbeats.watch(self)
        metrics.CONNECTIONS.labels(self.transport).inc()
        self.channels.update(channels)
        await self.backend.attach(self.sock, streams)
        await self.backend.register(
            connection_id=self.id, address=self.address, record=self.record()
        )
        if self.principal.is_account:
            await database_sync_to_async(PublicAccount.touch)(user)
        pending = await self.backend.take_pending(user) if personal is not None else None
        replays = {}
        # Broadcasts are live only (docs/decisions.md): never replayed.
        resumable = [s for s in streams if s != addressing.BROADCAST]
        for stream in resumable:
            if stream in after:
                replays[stream] = await self.backend.replay(stream, after=after[stream])
            elif stream == personal and pending is not None:
                replays[stream] = await self.backend.replay(stream, start=pending)
        if self.sock.positions is not None:
            await self._start_positions(resumable, after, pending)
        self.sock.write(
            _text(
                {
                    "type": "welcome",
                    "connection_id": self.id,
                    "user": None if personal is None else user,
                    "transport": self.transport,
                    "heartbeat_interval": _heartbeat_interval(self.transport),
                    "replayed": sum(len(missed) for missed in replays.values()),
                    "channels": list(channels),
                }
            )
        )
        self._replay(replays)
        for channel in channels:
            await self._join(channel)

    async def _start_positions(self, streams, after, pending) -> None:
        """Where a client that resumes with this connection's position should
        start in each stream: where it asked, just before the offline messages
        it is about to be handed, or the stream's newest message now."""
        positions = self.sock.positions
        tips = await self.backend.tips([s for s in streams if s not in after])
        for stream in streams:
            if stream in after:
                positions[stream] = after[stream]
            elif stream == self.personal_stream and pending is not None:
                positions[stream] = before(parse_id(pending))
            else:
                # A stream with no history yet: anything it later holds is new.
                positions[stream] = tips[stream] or (0, 0)

    def _replay(self, replays: dict[str, list[tuple[str, str]]]) -> None:
        """Write missed messages, oldest first across streams (ids are times),
        then the live ones held meanwhile that the replay did not cover."""
        missed = sorted(
            (parse_id(message_id), stream, text)
            for stream, entries in replays.items()
            for message_id, text in entries
        )
        covered = {}
        for key, stream, text in missed:
            self.sock.deliver(stream, key, {"type": "websocket.send", "text": text}, replayed=True)
            covered[stream] = key
        self.sock.release(covered)

    async def _check_user_connections(self, user: str | None) -> None:
        # Counted across processes; connections opening at the same instant
        # may overshoot by a few (docs/decisions.md).
        if user is None or self.principal.is_anonymous:
            return
        live = await self.backend.user_connections(user)
        if len(live) >= settings.MAX_CONNECTIONS_PER_USER:
            raise TooManyUserConnections(
                f"At most {settings.MAX_CONNECTIONS_PER_USER} live connections per user."
            )

    def _check_subscriptions(self, count: int) -> None:
        if count > settings.MAX_SUBSCRIPTIONS:
            raise Validation(
                f"At most {settings.MAX_SUBSCRIPTIONS} subscriptions per connection.",
                fields={"channel": ["too many subscriptions"]},
            )

    def authorize(self, channel: str) -> None:
        """Refuse an action on a channel this principal may not use."""
        if self.principal.may_use(channel):
            return
        if self.principal.serves_channels is not None:
            raise ForbiddenAction(f"@{self.principal.user} does not serve {channel!r}.")
        raise ForbiddenAction(
            f"{channel!r} is private: it needs a token whose `channels` claim grants it."
        )

    def authorize_user(self, user: str) -> None:
        """Refuse a message to a user this principal may not address."""
        if not self.principal.may_address(user):
            raise ForbiddenAction(f"@{self.principal.user} does not serve {user!r}.")

    async def asubscribe(self, *, channel: str, since: tuple[int, int] | None) -> int:
        """Join a channel, replaying what came after `since`; returns the replay count."""
        self.authorize(channel)
        if channel in self.channels:
            return 0
        self._check_subscriptions(len(self.channels) + 1)
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
        self._replay({stream: missed})
        await self.backend.update(connection_id=self.id, record=self.record())
        await self._join(channel)
        return len(missed)

    async def aunsubscribe(self, *, channel: str) -> None:
        if channel not in self.channels:
            return
        self.channels.discard(channel)
        await self.backend.detach(self.sock, [addressing.channel_stream(channel)])
        await self.backend.update(connection_id=self.id, record=self.record())
        if not self.principal.is_anonymous:
            await presence.aleave(
                self.backend, channel=channel, connection_id=self.id, user=self.principal.user
            )

    async def _join(self, channel: str) -> None:
        if not self.principal.is_anonymous:
            await presence.ajoin(
                self.backend, channel=channel, connection_id=self.id, user=self.principal.user
            )

    def send_frame(self, frame: dict) -> None:
        """Queue a control frame behind whatever this socket is already sending."""
        self.sock.write(_text(frame))

    def close(self) -> None:
        """Forget this connection everywhere. Safe to call more than once, and
        from a cancelled task: the local part is immediate, the rest follows."""
        callbacks.closed(self)  # also for a connect accepted, then refused while opening
        if not self.opened:
            return
        self.opened = False
        heartbeats.unwatch(self)
        self.sock.closed = True
        # The transport's callbacks point back at it: dropped here, a closed
        # connection is freed by reference counting, with no cycle left for
        # a full garbage collection (a pause of every connection) to find.
        self.end = self.sock.on_overflow = None
        metrics.CONNECTIONS.labels(self.transport).dec()
        self.backend.hub.counts[self.transport] -= 1
        self.backend.hub.connections.pop(self.id, None)
        self.backend.forget(self.sock)
        user = None if self.principal.is_anonymous else self.principal.user
        in_background(self.backend.unregister(user=user, connection_id=self.id))
        for channel in self.channels if user is not None else ():
            in_background(
                presence.aleave(self.backend, channel=channel, connection_id=self.id, user=user)
            )
        if self.principal.is_account:
            in_background(database_sync_to_async(PublicAccount.touch)(self.principal.user))


def before(key: tuple[int, int]) -> tuple[int, int]:
    """The greatest key lower than `key`: a position just before its message."""
    ms, seq = key
    return (ms, seq - 1) if seq > 0 else (ms - 1, 2**63 - 1)


def max_connections(transport: str) -> int:
    """How many connections of a transport one process accepts."""
    if transport == "sse":
        return settings.SSE_MAX_CONNECTIONS
    return settings.WEBSOCKET_MAX_CONNECTIONS


def _heartbeat_interval(transport: str) -> int:
    if transport == "sse":
        return settings.SSE_HEARTBEAT_INTERVAL
    return settings.WEBSOCKET_HEARTBEAT_INTERVAL


_background: set[asyncio.Task] = set()


def background_tasks() -> list[asyncio.Task]:
    """The unregistrations and closes still running (a shutdown waits for them)."""
    return list(_background)


def in_background(coro) -> None:
    """Run `coro` without waiting for it, kept until it ends (a shutdown waits)."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _text(frame: dict) -> dict:
    return {"type": "websocket.send", "text": envelope.dumps(frame)}
