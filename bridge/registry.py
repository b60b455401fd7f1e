"""The live connections of the whole gateway, as the registry records them.

Every process keeps its connections' records in the backend (memory: this
process; Redis: one hash per process, dropped when the process stops renewing
its liveness), so what these functions answer is true across the gateway.
"""

import asyncio

from django.conf import settings

from .backends import get_backend
from .connections import close_remote
from .errors import ClosedByAdmin, NotFound

TRANSPORTS = ("websocket", "sse")
CLOSE_WAIT = 2.0  # s a DELETE waits for the connection to leave the registry

# What a client of the API sees of a record; internal names (the Channels
# channel name a close is sent to) stay inside.
PUBLIC_FIELDS = ("id", "user", "kind", "transport", "instance", "channels", "connected_at")


def public(record: dict) -> dict:
    """A record as the API shows it; `last_seen` is `connected_at` until the
    connection's first heartbeat tick records one."""
    answer = {name: record.get(name) for name in PUBLIC_FIELDS}
    last_seen = record.get("last_seen")
    answer["last_seen"] = record["connected_at"] if last_seen is None else last_seen
    return answer


def _order(record: dict) -> tuple:
    return (record["connected_at"], record["id"])


async def aconnections(
    *, user_id: str | None = None, channel: str | None = None, transport: str | None = None
) -> list[dict]:
    """The live connections of the gateway, oldest first, filtered by
    principal, channel subscription and transport (each optional)."""
    records = await get_backend().all_records()
    return [
        public(r)
        for r in sorted(records, key=_order)
        if (user_id is None or r["user"] == user_id)
        and (channel is None or channel in r["channels"])
        and (transport is None or r["transport"] == transport)
    ]


async def aclose(*, connection_id: str) -> None:
    """Close one live connection, on whichever process it lives: an `error`
    frame (or SSE `error` event) `closed_by_admin`, then close code 4000.
    Returns once it left the registry (within CLOSE_WAIT). An id no live
    connection has raises NotFound."""
    backend = get_backend()
    record = next((r for r in await backend.all_records() if r["id"] == connection_id), None)
    if record is None:
        raise NotFound(f"No live connection {connection_id!r}.")
    address = record.get("address")
    if address is None and record["user"] is not None:
        # A record written before records named their channel: the user's
        # connection index knows it.
        address = (await backend.user_connections(record["user"])).get(connection_id)
    if address is None:
        raise NotFound(f"Connection {connection_id!r} cannot be reached.")
    await close_remote(address, ClosedByAdmin)
    # Answer once it has left the registry, so that a list read right after
    # the answer no longer shows it; bounded, as its process may be slow.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_WAIT
    while loop.time() < deadline:
        await asyncio.sleep(0.02)
        if all(r["id"] != connection_id for r in await backend.all_records()):
            return


async def achannel(*, name: str) -> dict:
    """Who is subscribed to a channel across the gateway: its connections,
    and the distinct principals among them (anonymous streams are counted
    as connections, not as users)."""
    subscribers = await aconnections(channel=name)
    users = sorted({c["user"] for c in subscribers if c["user"] is not None})
    return {
        "channel": name,
        "connections": len(subscribers),
        "users": users,
        "presence": users,
        "subscribers": subscribers,
    }


async def auser(*, user_id: str) -> dict:
    """Whether a principal is connected anywhere in the gateway, and how."""
    connections = await aconnections(user_id=user_id)
    transports = {t: sum(c["transport"] == t for c in connections) for t in TRANSPORTS}
    return {
        "user": user_id,
        "online": bool(connections),
        "connections": len(connections),
        "transports": transports,
        "channels": sorted({name for c in connections for name in c["channels"]}),
    }


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
