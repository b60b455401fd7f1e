"""Failed authentications per client address: past AUTH_FAILURE_LIMIT within
AUTH_FAILURE_WINDOW seconds, the address is refused until the window ends,
so that tokens cannot be guessed at the speed of the network.

Counted per process (each instance guards itself); the table is bounded.
"""

import logging
import time

from django.conf import settings

log = logging.getLogger("accounts.auth")

MAX_ADDRESSES = 10_000  # addresses tracked at once; the oldest windows go first

# address -> [start of its window, failures in it]
_windows: dict[str, list[float]] = {}


def retry_after(address: str | None) -> int | None:
    """Seconds until `address` may try again, or None if it may now."""
    window = _windows.get(address) if address else None
    if window is None or window[1] < settings.AUTH_FAILURE_LIMIT:
        return None
    left = window[0] + settings.AUTH_FAILURE_WINDOW - time.monotonic()
    return max(1, int(left + 0.999)) if left > 0 else None


def record(address: str | None, reason: str) -> None:
    """Count one failure of `address` and log it (the reason never holds a secret)."""
    log.warning("authentication failed from %s: %s", address or "unknown", reason)
    if not address:
        return
    now = time.monotonic()
    window = _windows.get(address)
    if window is None or now - window[0] >= settings.AUTH_FAILURE_WINDOW:
        if window is None and len(_windows) >= MAX_ADDRESSES:
            del _windows[next(iter(_windows))]
        _windows.pop(address, None)
        _windows[address] = [now, 1]
    else:
        window[1] += 1


def clear() -> None:
    _windows.clear()
