"""Process-local fan-out: which of this process's sockets hear which stream.

A message reaches a process once (from the bus), already encoded; the hub
writes that one frame to each local socket. Writes start eagerly: an ASGI
send that completes at once costs no task; one that would block moves that
socket to a bounded backlog drained by its own task, so one client that
stops reading never stalls the others.
"""

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable

from autobahn.exception import Disconnected

from . import metrics
from .history import parse_id

log = logging.getLogger(__name__)

# What an ASGI send raises once the peer has left, its disconnect event still
# to come: uvicorn's ClientDisconnected (an OSError), Daphne's (autobahn's).
PEER_GONE = (OSError, Disconnected)

Send = Callable[[dict], Awaitable[None]]


class LocalSocket:
    """One live connection as the hub sees it: a send callable and its streams."""

    __slots__ = (
        "_backlog",
        "_buffer",
        "_drain_task",
        "_replayed",
        "_send",
        "closed",
        "max_backlog",
        "member",
        "on_overflow",
        "owner",
        "positions",
        "streams",
        "transform",
    )

    def __init__(self, send: Send, *, max_backlog: int, on_overflow: Callable[[], None]):
        self._send = send
        self.max_backlog = max_backlog
        self.on_overflow = on_overflow
        self.streams: set[str] = set()
        self.closed = False
        # While a replay is being written, live frames wait here (stream, key, message).
        self._buffer: list | None = None
        # (message, replayed) pairs waiting behind a send that blocked, and
        # how many of them are replayed (not counted against max_backlog).
        self._backlog: deque | None = None
        self._replayed = 0
        self._drain_task: asyncio.Task | None = None
        # Stream -> key of the last message written, for transports whose
        # clients resume from a position in every stream (SSE); None elsewhere.
        self.positions: dict[str, tuple[int, int]] | None = None
        # The connection id this socket belongs to (frames may exclude it),
        # and the principal it counts as in channel presence (None: anonymous).
        self.owner: str | None = None
        self.member: str | None = None
        # Rewrites each outgoing text frame for a client that speaks another
        # dialect (seed 004); returns None to drop the frame.
        self.transform: Callable[[dict], dict | None] | None = None

    # -- replay ordering -------------------------------------------------------
    def hold(self) -> None:
        """Hold live frames until `release()`: a replay is about to be written."""
        if self._buffer is None:
            self._buffer = []

    def release(self, covered: dict[str, tuple[int, int]] | None = None) -> None:
        """Write held frames, dropping those a replay already covered
        (`covered`: stream -> key of the last message replayed)."""
        held, self._buffer = self._buffer, None
        for stream, key, message in held or ():
            last = covered.get(stream) if covered else None
            if last is not None and key is not None and key <= last:
                continue
            self.deliver(stream, key, message)

    def offer(self, stream: str, key: tuple[int, int] | None, message: dict) -> None:
        if self._buffer is not None:
            self._buffer.append((stream, key, message))
        else:
            self.deliver(stream, key, message)

    def deliver(
        self, stream: str, key: tuple[int, int] | None, message: dict, *, replayed: bool = False
    ) -> None:
        """Write one message of `stream` (`key` None for a live-only frame)."""
        self.write(message, replayed=replayed)

    # -- writing ----------------------------------------------------------------
    def write(self, message: dict, *, replayed: bool = False) -> None:
        """Start sending an ASGI message without waiting for the socket.

        A replayed message is queued whatever the backlog holds: a replay is
        bounded by the history, and the bound is for live frames."""
        if self.closed:
            return
        if self.transform is not None and message["type"] == "websocket.send":
            message = self.transform(message)
            if message is None:
                return
        if self._backlog is not None:
            if not replayed and len(self._backlog) - self._replayed >= self.max_backlog:
                # What is queued is dropped: the client resumes after the
                # last id it received, and nothing may follow the close.
                self.closed = True
                self._backlog.clear()
                self.on_overflow()
                return
            self._backlog.append((message, replayed))
            self._replayed += replayed
            return
        coro = self._send(message)
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return
        except PEER_GONE:
            log.debug("socket gone", exc_info=True)
            self.closed = True
            return
        except Exception:
            log.exception("socket send failed")
            self.closed = True
            return
        self._backlog = deque()
        self._replayed = 0
        self._drain_task = asyncio.ensure_future(self._drain(coro, waiting_on))

    async def _drain(self, coro, waiting_on) -> None:
        try:
            await _finish(coro, waiting_on)
            while self._backlog and not self.closed:
                message, replayed = self._backlog.popleft()
                self._replayed -= replayed
                await self._send(message)
        except Exception:
            log.debug("socket drain ended", exc_info=True)
            self.closed = True
        finally:
            self._backlog = None
            self._drain_task = None

    async def drained(self) -> None:
        """Wait for the send in progress, if any, to end (bound it with a timeout)."""
        task = self._drain_task
        if task is not None:
            await asyncio.wait([task])


def _more_members(group: set[LocalSocket], limit: int) -> bool:
    """Do these sockets belong to more than `limit` distinct principals?"""
    if len(group) <= limit:
        return False
    seen = set()
    for sock in group:
        if sock.member is not None:
            seen.add(sock.member)
            if len(seen) > limit:
                return True
    return False


async def _finish(coro, waiting_on) -> None:
    """Drive a coroutine that was started by hand with `send(None)` to its end."""
    while True:
        try:
            if waiting_on is not None:
                # The coroutine flagged this future as awaited when it
                # yielded it; awaiting it again here needs the flag cleared.
                if getattr(waiting_on, "_asyncio_future_blocking", False):
                    waiting_on._asyncio_future_blocking = False
                await waiting_on
        except BaseException as exc:  # noqa: BLE001 (re-raised inside the coroutine)
            try:
                waiting_on = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return


class Hub:
    """Stream name -> this process's sockets listening to it."""

    def __init__(self) -> None:
        self.listeners: dict[str, set[LocalSocket]] = {}
        self.sockets: set[LocalSocket] = set()
        # Live connections of this process by id, for the control events
        # addressed to them (bridge.connections.send_control).
        self.connections: dict[str, object] = {}
        # Live connections of this process, by transport.
        self.counts: Counter[str] = Counter()

    def add(self, sock: LocalSocket) -> None:
        self.sockets.add(sock)

    def remove(self, sock: LocalSocket) -> list[str]:
        """Forget a socket; returns the streams that now have no local listener."""
        self.sockets.discard(sock)
        emptied = [s for s in list(sock.streams) if self.unlisten(sock, s)]
        return emptied

    def listen(self, sock: LocalSocket, stream: str) -> bool:
        """Make `sock` hear `stream`; True when it is the first local listener."""
        group = self.listeners.get(stream)
        first = group is None
        if first:
            group = self.listeners[stream] = set()
        group.add(sock)
        sock.streams.add(stream)
        return first

    def unlisten(self, sock: LocalSocket, stream: str) -> bool:
        """Stop `sock` hearing `stream`; True when no local listener is left."""
        sock.streams.discard(stream)
        group = self.listeners.get(stream)
        if group is None:
            return False
        group.discard(sock)
        if group:
            return False
        del self.listeners[stream]
        return True

    def deliver(
        self,
        stream: str,
        message_id: str | None,
        frame: str,
        exclude: str | None = None,
        crowd: int | None = None,
    ) -> int:
        """Write one encoded frame to every local listener of `stream` but the
        connection `exclude` (a live-only frame, such as a reply, has no id).

        A frame with a `crowd` limit is dropped where the stream's local
        listeners are more members than that: the channel has at least as many
        everywhere, so a presence event that was sent while a channel was small
        does not reach the crowd that subscribed while it travelled."""
        group = self.listeners.get(stream)
        if not group or (crowd is not None and _more_members(group, crowd)):
            return 0
        key = parse_id(message_id) if message_id is not None else None
        message = {"type": "websocket.send", "text": frame}
        count = 0
        for sock in tuple(group):
            if exclude is None or sock.owner != exclude:
                sock.offer(stream, key, message)
                count += 1
        metrics.DELIVERIES.inc(count)
        return count
