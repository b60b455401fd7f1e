"""Every live connection of an event loop, watched by one timer: WebSocket
heartbeats, the registry's `last_seen`, and closing everything on shutdown.

One task per event loop, never one per connection: once every
WEBSOCKET_HEARTBEAT_INTERVAL seconds it writes a `ping` frame to each
WebSocket through its `LocalSocket`, ends those that let
WEBSOCKET_MAX_MISSED_PONGS pings in a row pass without sending any frame, and
writes the `last_seen` of the connections heard from since their last turn to
the registry in one batch. The connections take their turns in SLICES parts
spread over the interval: 5,000 pings written at once would stall every
delivery of the process for a tenth of a second.

A transport hands each `Connection` an `end` callable (`await conn.end(error)`
tells the client why, then closes): the heartbeat timeout and the shutdown use
it, so each transport closes in its own way (a WebSocket close code, an SSE
`error` event).
"""

import asyncio
import contextlib
import logging
import time
import weakref
from typing import TYPE_CHECKING

from django.conf import settings

from .errors import HeartbeatTimeout, ServerShutdown

if TYPE_CHECKING:
    from .connections import Connection

log = logging.getLogger(__name__)

SLICES = 10  # parts of the interval the connections' turns are spread over


class _Watch:
    """One event loop's live connections and their heartbeat state."""

    def __init__(self) -> None:
        # Connection -> [time of the last ping sent (0: none yet), consecutive
        # pings missed, last_seen last written to the registry, its slice].
        self.conns: dict[Connection, list] = {}
        self.opened = 0  # connections watched so far: the next one's slice
        self.task: asyncio.Task | None = None
        self.draining = False
        self.ending: set[asyncio.Task] = set()


_watches: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watch]" = (
    weakref.WeakKeyDictionary()
)


def _watch() -> _Watch:
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None:
        watch = _watches[loop] = _Watch()
    return watch


def draining() -> bool:
    """True once this loop's server started shutting down: new connections are refused."""
    watch = _watches.get(asyncio.get_running_loop())
    return watch is not None and watch.draining


def watch(conn: "Connection") -> None:
    """Watch a connection that just opened (any transport)."""
    state = _watch()
    state.conns[conn] = [0.0, 0, conn.last_seen, state.opened % SLICES]
    state.opened += 1
    if state.task is None:
        state.task = asyncio.get_running_loop().create_task(_run(state))


def unwatch(conn: "Connection") -> None:
    """Stop watching a connection (it closed). Safe to call more than once."""
    with contextlib.suppress(RuntimeError):  # no running loop: nothing to do
        state = _watches.get(asyncio.get_running_loop())
        if state is not None:
            state.conns.pop(conn, None)


async def _run(state: _Watch) -> None:
    try:
        part = 0
        while state.conns:
            await asyncio.sleep(settings.WEBSOCKET_HEARTBEAT_INTERVAL / SLICES)
            try:
                await tick(state, part=part)
            except Exception:
                log.exception("a heartbeat tick failed")
            part = (part + 1) % SLICES
    finally:
        state.task = None


async def tick(
    state: _Watch | None = None, now: float | None = None, part: int | None = None
) -> None:
    """Ping every WebSocket (of slice `part` only, when given), end the
    silent ones, and write changed `last_seen` values to the registry in one
    batch."""
    state = state or _watch()
    now = time.time() if now is None else now
    limit = settings.WEBSOCKET_MAX_MISSED_PONGS
    ping = {"type": "ping", "ts": now}
    seen = []
    for conn, beat in tuple(state.conns.items()):
        if part is not None and beat[3] != part:
            continue
        if conn.last_seen != beat[2]:
            beat[2] = conn.last_seen
            seen.append(conn)
        if conn.transport != "websocket":
            continue  # event streams have their own keep-alive comments (bridge.sse)
        if conn.last_seen >= beat[0]:
            beat[1] = 0  # heard from since the last ping (or never pinged yet)
        else:
            beat[1] += 1
        if beat[1] >= limit:
            state.conns.pop(conn, None)
            _end(state, conn, HeartbeatTimeout())
            continue
        conn.send_frame(ping)
        beat[0] = now
    if seen:
        await _report(seen)


async def _report(conns: list["Connection"]) -> None:
    """One registry write for every connection heard from since the last tick."""
    backend = conns[0].backend
    records = {conn.id: conn.record() for conn in conns if conn.opened}
    if not records:
        return
    await backend.update_many(records=records)
    # A connection that closed while the batch was on its way may have been
    # unregistered before the batch wrote its record back: forget it again.
    for conn in conns:
        if conn.id in records and not conn.opened:
            user = None if conn.principal.is_anonymous else conn.principal.user
            await backend.unregister(user=user, connection_id=conn.id)


def _end(state: _Watch, conn: "Connection", error) -> asyncio.Task:
    end = conn.end
    task = asyncio.ensure_future(end(error) if end is not None else _close(conn))
    state.ending.add(task)
    task.add_done_callback(state.ending.discard)
    return task


async def _close(conn: "Connection") -> None:
    conn.close()


async def ashutdown(grace: float | None = None) -> int:
    """End every connection of this loop with `server_shutdown` (1001 on a
    WebSocket, an `error` event on a stream) and wait, at most `grace`
    seconds (SHUTDOWN_GRACE), for the closes to go out, the registry to forget
    them and their disconnect callbacks to be posted.
    Connections that try to open afterwards are refused. Returns how many
    connections were ended."""
    from . import callbacks, connections  # the background work to wait for

    timeout = settings.SHUTDOWN_GRACE if grace is None else grace
    state = _watch()
    state.draining = True
    conns = list(state.conns)
    state.conns.clear()
    tasks = [_end(state, conn, ServerShutdown()) for conn in conns]
    deadline = time.monotonic() + timeout
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    left = deadline - time.monotonic()
    running = connections.background_tasks() + callbacks.background_tasks()
    pending = [t for t in running if not t.done()]
    if pending and left > 0:
        await asyncio.wait(pending, timeout=left)
    log.info("shutdown: %d connections closed", len(conns))
    return len(conns)
