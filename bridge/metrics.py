"""Prometheus metrics of this process (served at /metrics)."""

import gc
import time

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("gateway_connections", "Live connections on this process", ["transport"])
PUBLISHED = Counter("gateway_messages_published_total", "Messages accepted, by target", ["target"])
DELIVERIES = Counter("gateway_deliveries_total", "Frames written to local sockets by fan-out")
FRAMES_IN = Counter("gateway_frames_received_total", "WebSocket frames received from clients")
ERRORS = Counter("gateway_errors_total", "Errors answered to clients, by code", ["code"])

GC_PAUSES = Histogram(
    "gateway_gc_pause_seconds",
    "Garbage collections of this process: how long each stalled every connection",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
_gc_started = 0.0


def _time_gc(phase: str, info: dict) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        GC_PAUSES.labels(str(info["generation"])).observe(time.perf_counter() - _gc_started)


def watch_gc() -> None:
    """Time every collection (a pause of the whole process) into GC_PAUSES."""
    if _time_gc not in gc.callbacks:
        gc.callbacks.append(_time_gc)
