"""Health, readiness and metrics, at the root as seed 000 has them."""

import time

from channels.db import database_sync_to_async
from django.db import connection
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import registry
from .backends import get_backend
from .instance import INSTANCE_ID, STARTED_AT

SERVICE = "realtime-gateway"


def _local_connections() -> int:
    return sum(registry.local_counts().values())


async def health(request):
    """This process: its live connections (`websocket`, `sse`, and in all)."""
    backend = get_backend()
    return JsonResponse(
        {
            "status": "healthy",
            "connections": _local_connections(),
            **registry.local_counts(),
            "uptime": round(time.time() - STARTED_AT, 1),
            "instance": INSTANCE_ID,
            "backend": backend.name,
        }
    )


def _check_database() -> None:
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def ready(request):
    checks = {}
    for name, check in (
        ("database", database_sync_to_async(_check_database)),
        ("channel_layer", get_backend().ping),
    ):
        try:
            await check()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 (any failure means not ready)
            checks[name] = f"error: {exc.__class__.__name__}: {exc}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


async def metrics(request):
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"active_connections": _local_connections(), "service": SERVICE})
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
