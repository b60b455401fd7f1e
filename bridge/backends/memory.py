"""The embedded default: history, registry and fan-out inside one process."""

import time
from collections import deque

from django.conf import settings

from ..envelope import frame
from ..history import format_id
from ..hub import Hub, LocalSocket
from . import Outgoing, Published

SWEEP_EVERY = 60.0  # seconds between sweeps of expired streams


class MemoryBackend:
    name = "memory"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        # stream -> deque of (key, tail, stored_at)
        self.history: dict[str, deque] = {}
        self.last_key: dict[str, tuple[int, int]] = {}
        self.pending: dict[str, tuple[str, float]] = {}  # user -> (first id, expires)
        # user -> {connection id: (transport, channel name)}
        self.connections: dict[str, dict[str, tuple[str, str]]] = {}
        self.records: dict[str, dict] = {}  # connection id -> its record
        self.members_of: dict[str, dict[str, str]] = {}  # channel -> {connection id: user}
        self.member_users: dict[str, dict[str, int]] = {}  # channel -> {user: connections}
        self.claims: dict[str, float] = {}  # correlation id -> expiry (monotonic)
        # Set by the replies module: handles a control message meant for this process.
        self.on_control = lambda payload: None
        self._next_sweep = time.monotonic() + SWEEP_EVERY

    # -- publishing -------------------------------------------------------------
    def _append(self, stream: str, tail: str, now: float) -> tuple[int, int]:
        ms = int(now * 1000)
        last = self.last_key.get(stream)
        key = (ms, 0) if last is None or ms > last[0] else (last[0], last[1] + 1)
        self.last_key[stream] = key
        entries = self.history.get(stream)
        if entries is None:
            entries = self.history[stream] = deque(maxlen=settings.HISTORY_SIZE)
        entries.append((key, tail, now))
        return key

    def _publish(self, out: Outgoing, now: float) -> Published:
        message_id = format_id(self._append(out.stream, out.tail, now))
        text = frame(message_id, out.tail)
        online = self.hub.deliver(out.stream, message_id, text)
        if online == 0 and out.user is not None:
            first = self.pending.get(out.user)
            self.pending[out.user] = (
                first[0] if first else message_id,
                now + settings.HISTORY_TTL,
            )
        return Published(message_id, online)

    async def publish_many(self, outgoing: list[Outgoing]) -> list[Published]:
        now = time.time()
        if time.monotonic() > self._next_sweep:
            self._sweep(now)
        return [self._publish(out, now) for out in outgoing]

    # -- history ----------------------------------------------------------------
    async def replay(
        self, stream: str, *, after: tuple[int, int] | None = None, start: str | None = None
    ) -> list[tuple[str, str]]:
        """Frames of `stream` after the key `after` (or from the id `start` on)."""
        entries = self.history.get(stream)
        if not entries:
            return []
        oldest = time.time() - settings.HISTORY_TTL
        out = []
        start_key = None
        if start is not None:
            ms, seq = start.split("-")
            start_key = (int(ms), int(seq))
        for key, tail, stored_at in entries:
            if stored_at < oldest:
                continue
            if after is not None and key <= after:
                continue
            if start_key is not None and key < start_key:
                continue
            message_id = format_id(key)
            out.append((message_id, frame(message_id, tail)))
        return out

    async def tips(self, streams: list[str]) -> dict[str, tuple[int, int] | None]:
        """The key of each stream's newest message (None for a stream never used)."""
        return {stream: self.last_key.get(stream) for stream in streams}

    async def take_pending(self, user: str) -> str | None:
        entry = self.pending.pop(user, None)
        if entry is None or entry[1] < time.time():
            return None
        return entry[0]

    def _sweep(self, now: float) -> None:
        """Drop what expired: old history, pending markers, correlation claims."""
        monotonic = time.monotonic()
        self._next_sweep = monotonic + SWEEP_EVERY
        for correlation_id in [c for c, expires in self.claims.items() if expires < monotonic]:
            del self.claims[correlation_id]
        oldest = now - settings.HISTORY_TTL
        for stream in list(self.history):
            entries = self.history[stream]
            while entries and entries[0][2] < oldest:
                entries.popleft()
            if not entries:
                del self.history[stream]
        for user in [u for u, (_, expires) in self.pending.items() if expires < now]:
            del self.pending[user]

    # -- listeners and registry -----------------------------------------------------
    async def attach(self, sock: LocalSocket, streams: list[str]) -> None:
        for stream in streams:
            self.hub.listen(sock, stream)

    async def detach(self, sock: LocalSocket, streams: list[str]) -> None:
        for stream in streams:
            self.hub.unlisten(sock, stream)

    async def register(self, *, connection_id: str, address: str, record: dict) -> None:
        """Enter a connection in the registry (and its user's connections)."""
        self.records[connection_id] = record
        if record["user"] is not None:
            self.connections.setdefault(record["user"], {})[connection_id] = (
                record["transport"],
                address,
            )

    async def update(self, *, connection_id: str, record: dict) -> None:
        if connection_id in self.records:
            self.records[connection_id] = record

    async def update_many(self, *, records: dict[str, dict]) -> None:
        """Rewrite several connections' records at once (heartbeat ticks)."""
        for connection_id, record in records.items():
            if connection_id in self.records:
                self.records[connection_id] = record

    async def all_records(self) -> list[dict]:
        """Every live connection's record, across the gateway."""
        return list(self.records.values())

    async def record(self, connection_id: str) -> dict | None:
        """One live connection's record, or None."""
        return self.records.get(connection_id)

    async def unregister(self, *, user: str | None, connection_id: str) -> None:
        self.records.pop(connection_id, None)
        conns = self.connections.get(user)
        if conns is not None:
            conns.pop(connection_id, None)
            if not conns:
                del self.connections[user]

    async def user_connections(self, user: str, transport: str | None = None) -> dict[str, str]:
        """Live connections of a user (over one transport, if given):
        connection id -> Channels channel name."""
        return {
            conn: name
            for conn, (kind, name) in self.connections.get(user, {}).items()
            if transport in (None, kind)
        }

    def forget(self, sock: LocalSocket) -> None:
        """Drop a socket at once (no I/O): used when a consumer is cancelled."""
        self.hub.remove(sock)

    async def ping(self) -> None:
        return None

    # -- correlation ----------------------------------------------------------------
    async def claim(self, correlation_id: str, ttl: float) -> bool:
        """Make this process the waiter on a correlation id, unless one is."""
        now = time.monotonic()
        expires = self.claims.get(correlation_id)
        if expires is not None and expires > now:
            return False
        self.claims[correlation_id] = now + ttl
        return True

    async def release(self, correlation_id: str) -> None:
        self.claims.pop(correlation_id, None)

    async def to_owner(self, correlation_id: str, payload: dict, *, end: bool = False) -> bool:
        """Hand `payload` to the waiter on a correlation id (here, or nobody:
        False); `end` drops the claim in the same step."""
        expires = self.claims.pop(correlation_id, None) if end else self.claims.get(correlation_id)
        if expires is None or expires < time.monotonic():
            self.claims.pop(correlation_id, None)
            return False
        self.on_control(payload)
        return True

    async def send_control(self, process: str, payload: dict) -> None:
        self.on_control(payload)

    async def publish_live(
        self, stream: str, text: str, exclude: str | None = None, crowd: int | None = None
    ) -> int:
        """A frame for the live listeners of a stream only (but the connection
        `exclude`): no id, no history."""
        return self.hub.deliver(stream, None, text, exclude, crowd)

    # -- channel members --------------------------------------------------------------
    async def join(self, channel: str, connection_id: str, user: str) -> tuple[bool, int]:
        """Count a connection in a channel's members: (the user's first?, members)."""
        conns = self.members_of.setdefault(channel, {})
        users = self.member_users.setdefault(channel, {})
        if connection_id in conns:
            return False, len(users)
        conns[connection_id] = user
        users[user] = users.get(user, 0) + 1
        return users[user] == 1, len(users)

    async def leave(self, channel: str, connection_id: str, user: str) -> tuple[bool, int]:
        """Take it out: (the user's last connection there?, members)."""
        conns = self.members_of.get(channel, {})
        users = self.member_users.get(channel, {})
        if conns.pop(connection_id, None) is None:
            return False, len(users)
        users[user] -= 1
        last = users[user] <= 0
        if last:
            del users[user]
        if not conns:
            self.members_of.pop(channel, None)
            self.member_users.pop(channel, None)
        return last, len(users)

    async def members(self, channel: str) -> list[str]:
        """The principals subscribed to a channel."""
        return sorted(self.member_users.get(channel, {}))

    async def take_dead_records(self) -> list[dict]:
        return []  # one process: nobody else can die
