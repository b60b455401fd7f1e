"""Where history, the connection registry and cross-process fan-out live.

`memory`: one process, nothing but Python. `redis`: every process sharing
`REDIS_URL` is one gateway. Both honour the same contract, so the services
never ask which one runs.
"""

import asyncio
import functools
import weakref
from dataclasses import dataclass

from django.conf import settings

from ..hub import Hub


@dataclass(frozen=True, slots=True)
class Published:
    """A message after it entered its stream: its id and live audience."""

    id: str
    online: int


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish: its stream, encoded tail, and the user whose
    pending marker it may set (personal streams only)."""

    stream: str
    tail: str
    user: str | None = None


# One backend per event loop: Redis clients belong to the loop they were made on.
_backends: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object]" = (
    weakref.WeakKeyDictionary()
)


def get_backend():
    """The backend of the running event loop, created on first use."""
    loop = asyncio.get_running_loop()
    backend = _backends.get(loop)
    if backend is None:
        if settings.REDIS_URL:
            from ..presence import asweep
            from .redis import RedisBackend

            backend = RedisBackend(Hub(), settings.REDIS_URL)
            backend.on_tick = lambda: asweep(backend)
        else:
            from .memory import MemoryBackend

            backend = MemoryBackend(Hub())
        from ..control import dispatch

        backend.on_control = functools.partial(dispatch, backend)
        _backends[loop] = backend
    return backend


def reset_backends() -> None:
    """Forget every backend (tests switch settings between runs)."""
    _backends.clear()
