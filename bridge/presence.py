"""Who is in a channel: join and leave events, the presence query, typing.

Members are counted per principal across the gateway (a user with two tabs
joins once). Join and leave events go to the other subscribers while the
channel has at most PRESENCE_MAX_MEMBERS members, and are dropped where
they arrive if it has grown past that meanwhile, so a crowd of
N costs a bounded number of frames, not N squared; the query answers at any
size. Members of a process that died are swept by a live one, and their
leave events go out then.
"""

import logging

from django.conf import settings

from . import addressing, envelope

log = logging.getLogger(__name__)


def _event(kind: str, channel: str, user: str) -> str:
    return envelope.dumps({"type": "presence", "event": kind, "channel": channel, "user": user})


async def ajoin(backend, *, channel: str, connection_id: str, user: str) -> None:
    """Count a connection in a channel; tell the others if its user is new there."""
    first, members = await backend.join(channel, connection_id, user)
    if first and members <= settings.PRESENCE_MAX_MEMBERS:
        await backend.publish_live(
            addressing.channel_stream(channel),
            _event("join", channel, user),
            exclude=connection_id,
            crowd=settings.PRESENCE_MAX_MEMBERS,
        )


async def aleave(backend, *, channel: str, connection_id: str, user: str) -> None:
    """Take a connection out of a channel; tell the others if its user is gone."""
    last, members = await backend.leave(channel, connection_id, user)
    if last and members < settings.PRESENCE_MAX_MEMBERS:
        await backend.publish_live(
            addressing.channel_stream(channel),
            _event("leave", channel, user),
            exclude=connection_id,
            crowd=settings.PRESENCE_MAX_MEMBERS,
        )


async def astate(backend, *, channel: str) -> dict:
    """The answer to a presence query: every principal subscribed now."""
    users = await backend.members(channel)
    return {"type": "presence", "event": "state", "channel": channel, "users": users}


async def atyping(backend, *, channel: str, connection_id: str, user: str, is_typing: bool):
    """Tell a channel's other subscribers that `user` is (or stopped) typing."""
    frame = {"type": "typing", "channel": channel, "user": user, "is_typing": is_typing}
    await backend.publish_live(
        addressing.channel_stream(channel), envelope.dumps(frame), exclude=connection_id
    )


async def asweep(backend) -> None:
    """Make the members of processes that died leave their channels."""
    for record in await backend.take_dead_records():
        user, connection_id = record.get("user"), record["id"]
        if user is None:
            continue
        for channel in record.get("channels", ()):
            try:
                await aleave(backend, channel=channel, connection_id=connection_id, user=user)
            except Exception:
                log.exception("a dead connection could not leave %s", channel)
