"""The live connections of the whole gateway, as the registry records them."""

from django.conf import settings

from .backends import get_backend

TRANSPORTS = ("websocket", "sse")


async def astats() -> dict:
    """Connection and subscription counts across every live process (seed
    002's numbers); `max` is what each process accepts."""
    records = await get_backend().all_records()
    limits = {"websocket": settings.WEBSOCKET_MAX_CONNECTIONS, "sse": settings.SSE_MAX_CONNECTIONS}
    answer = {}
    for transport in TRANSPORTS:
        mine = [r for r in records if r["transport"] == transport]
        answer[transport] = {
            "total": len(mine),
            "max": limits[transport],
            "users": len({r["user"] for r in mine if r["user"] is not None}),
        }
    subscriptions = [channel for r in records for channel in r["channels"]]
    answer["channels"] = {"total": len(set(subscriptions)), "subscriptions": len(subscriptions)}
    answer["total_connections"] = len(records)
    answer["public_accounts_online"] = len({r["user"] for r in records if r["kind"] == "account"})
    return answer


def local_counts() -> dict[str, int]:
    """This process's live connections, by transport."""
    counts = get_backend().hub.counts
    return {transport: counts[transport] for transport in TRANSPORTS}
