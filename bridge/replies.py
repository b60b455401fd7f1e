"""Correlation ids -> waiters, across processes (CONTRACT section 5).

A sender with a correlation id becomes its waiter: an open HTTP `send`
stream, or the WebSocket user who sent it. The waiting process claims the id
in the backend (so a second send with it gets 409, and a responder on any
process learns where to send), and a `response` is handed to that process as
a control message, then to the waiter. One claim per id, one reader per
process: nothing is created per request.
"""

import asyncio
import time
from dataclasses import dataclass

from . import addressing, envelope
from .backends import get_backend
from .errors import Conflict, UnknownCorrelation


@dataclass(slots=True)
class Waiter:
    expires: float  # monotonic
    queue: asyncio.Queue | None = None  # an HTTP send stream's
    user: str | None = None  # or a WebSocket sender, answered on its connections


def _waiters(backend) -> dict[str, Waiter]:
    """This process's waiters (kept on the backend: one per event loop)."""
    waiters = getattr(backend, "reply_waiters", None)
    if waiters is None:
        waiters = backend.reply_waiters = {}
    return waiters


def _sweep(waiters: dict[str, Waiter]) -> None:
    now = time.monotonic()
    for correlation_id in [c for c, w in waiters.items() if w.expires < now]:
        del waiters[correlation_id]


async def aclaim_for_stream(correlation_id: str, *, ttl: float) -> asyncio.Queue:
    """Wait for replies on a queue; Conflict if the id is already waited on."""
    backend = get_backend()
    waiters = _waiters(backend)
    if not await backend.claim(correlation_id, ttl):
        raise Conflict()
    queue: asyncio.Queue = asyncio.Queue()
    waiters[correlation_id] = Waiter(time.monotonic() + ttl, queue=queue)
    return queue


async def aclaim_for_user(correlation_id: str, *, user: str, ttl: float) -> bool:
    """Send replies on a correlation id to a user's connections; False when
    the id is already waited on (its replies keep going there)."""
    backend = get_backend()
    waiters = _waiters(backend)
    _sweep(waiters)
    if not await backend.claim(correlation_id, ttl):
        return False
    waiters[correlation_id] = Waiter(time.monotonic() + ttl, user=user)
    return True


async def aforget(correlation_id: str) -> None:
    """Stop waiting on a correlation id (the stream ended or its caller left)."""
    backend = get_backend()
    if _waiters(backend).pop(correlation_id, None) is not None:
        await backend.release(correlation_id)


async def areply(*, correlation_id: str, data, is_final: bool, sender: dict) -> None:
    """Route a reply to whoever waits on its correlation id, on any process."""
    backend = get_backend()
    _waiters(backend)
    payload = {
        "type": "response",
        "correlation_id": correlation_id,
        "data": data,
        "is_final": is_final,
        "from": sender,
    }
    # A final reply ends the claim here and now, so that a reply right after
    # it is refused wherever the waiter lives.
    if not await backend.to_owner(correlation_id, payload, end=is_final):
        raise UnknownCorrelation(f"Nobody waits for replies on {correlation_id!r}.")


def deliver(backend, payload: dict) -> None:
    """A reply reached the process its waiter lives on."""
    correlation_id = payload["correlation_id"]
    waiters = _waiters(backend)
    waiter = waiters.get(correlation_id)
    if waiter is None or waiter.expires < time.monotonic():
        return
    if waiter.queue is not None:
        waiter.queue.put_nowait(payload)
        return
    stream = addressing.user_stream(waiter.user)
    _spawn(backend.publish_live(stream, envelope.dumps(payload)))
    if payload["is_final"]:
        # Its claim ended with the final reply (`areply`): releasing it again
        # could drop a claim made on the same id since.
        del waiters[correlation_id]


_tasks: set[asyncio.Task] = set()


def _spawn(coro) -> None:
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
