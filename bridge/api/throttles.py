"""Requests per second on the HTTP API, per API key, or per client address
for requests without one: a token bucket, O(1) per request and kept in this
process (DRF's own throttles store a timestamp list per client in the cache,
rewritten on every request)."""

import time

from django.conf import settings
from rest_framework.throttling import BaseThrottle

MAX_CLIENTS = 10_000  # buckets kept at once; past it they all start full again

# client -> (tokens, time of the last refill)
_buckets: dict[str, tuple[float, float]] = {}


class ClientRateThrottle(BaseThrottle):
    """API_RATE_LIMIT requests per second, with bursts of API_RATE_BURST."""

    def allow_request(self, request, view) -> bool:
        key = request.auth
        client = f"key:{key.prefix}" if key is not None else f"addr:{_address(request)}"
        rate, burst = settings.API_RATE_LIMIT, settings.API_RATE_BURST
        now = time.monotonic()
        tokens, then = _buckets.get(client, (float(burst), now))
        tokens = min(float(burst), tokens + (now - then) * rate)
        if len(_buckets) >= MAX_CLIENTS and client not in _buckets:
            _buckets.clear()
        if tokens < 1:
            _buckets[client] = (tokens, now)
            self._wait = (1 - tokens) / rate
            return False
        _buckets[client] = (tokens - 1, now)
        return True

    def wait(self) -> float:
        return self._wait


def _address(request) -> str:
    # The server (Daphne with --proxy-headers) has put the client's address
    # here; a client's own X-Forwarded-For is not trusted.
    return request.META.get("REMOTE_ADDR") or "unknown"


def clear() -> None:
    _buckets.clear()
