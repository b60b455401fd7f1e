"""Prometheus metrics of this process (served at /metrics)."""

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge("gateway_connections", "Live connections on this process", ["transport"])
PUBLISHED = Counter("gateway_messages_published_total", "Messages accepted, by target", ["target"])
DELIVERIES = Counter("gateway_deliveries_total", "Frames written to local sockets by fan-out")
FRAMES_IN = Counter("gateway_frames_received_total", "WebSocket frames received from clients")
ERRORS = Counter("gateway_errors_total", "Errors answered to clients, by code", ["code"])
