"""What the transports call: push, batch, publish, send, send with reply, and
the public accounts list.

Keyword-only and async; the WebSocket consumer and the HTTP API both come
here, so a rule written once holds for both.
"""

import asyncio
import dataclasses
import uuid
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from django.conf import settings

from accounts import directory
from accounts.models import PublicAccount

from . import addressing, delivery, envelope, mentions, registry, replies
from .addressing import Target
from .backends import get_backend
from .connections import aconnection_counts, close_remote
from .delivery import Receipt
from .errors import ServerClosed, Validation


@dataclass(frozen=True, slots=True)
class PushItem:
    """One validated push: a target and what to say."""

    target: Target
    data: object = None
    event_type: str = "message"
    sender: dict | None = None
    correlation_id: str | None = None
    ts: float | None = None
    event_id: str | None = None
    # Set when an @mention routed the message to a public account: who sent it.
    original_sender: str | None = None
    # Already addressed to the accounts it mentions: not to be routed again.
    routed: bool = False
    tail: str = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        channel = self.target.name if self.target.kind == "channel" else None
        object.__setattr__(
            self,
            "tail",
            envelope.encode_tail(
                event_type=self.event_type,
                data=self.data,
                channel=channel,
                sender=self.sender,
                correlation_id=self.correlation_id,
                ts=self.ts,
                event_id=self.event_id,
                broadcast=self.target.kind == "broadcast",
                to_account=self.routed or self.original_sender is not None,
                original_sender=self.original_sender,
            ),
        )


async def _arouted(item: PushItem) -> list[PushItem] | None:
    """The messages a personal message becomes when it @mentions public
    accounts (one per account), or None when it goes where it is addressed."""
    if item.target.kind != "user" or item.routed:
        return None
    handles = await mentions.amentioned(item.data)
    if not handles:
        return None
    if item.original_sender is not None:
        # Addressed to an account already (`to: "@ci_bot"`): it keeps its copy.
        handles = list(dict.fromkeys([item.target.name, *handles]))
    sender = item.original_sender or next(iter((item.sender or {}).values()), item.target.name)
    return [
        dataclasses.replace(
            item, target=Target("user", handle), original_sender=sender, routed=True
        )
        for handle in handles
    ]


async def apush(*, item: PushItem) -> Receipt:
    """Deliver one message to a user (or the accounts it @mentions), a
    channel or everyone."""
    return (await apush_batch(items=[item]))[0]


async def apush_batch(*, items: list[PushItem]) -> list[Receipt]:
    """Deliver already-validated messages, in order, in one round trip (each
    message to one connection goes its own way, live only)."""
    if any(item.target.kind == "connection" for item in items):
        published = iter(await _apublish_many([i for i in items if i.target.kind != "connection"]))
        return [
            await asend_to_connection(connection_id=item.target.name, item=item)
            if item.target.kind == "connection"
            else next(published)
            for item in items
        ]
    return await _apublish_many(items)


async def _apublish_many(items: list[PushItem]) -> list[Receipt]:
    groups = []
    for item in items:
        routed = await _arouted(item)
        groups.append((item, routed))
    flat = [m for item, routed in groups for m in (routed or [item])]
    receipts = await delivery.adeliver_many([(m.target, m.tail) for m in flat])
    answers, start = [], 0
    for _, routed in groups:
        if routed is None:
            answers.append(receipts[start])
            start += 1
        else:
            answers.append(
                Receipt.combined(
                    receipts[start : start + len(routed)], [m.target.name for m in routed]
                )
            )
            start += len(routed)
    return answers


async def asend_to_connection(
    *, connection_id: str, item: PushItem | None = None, close: bool = False
) -> Receipt:
    """A message to one connection alone, wherever it lives, then (`close`)
    close it with `server_closed`. Live only: never stored, never replayed,
    `id` null; `online: false` when no live connection has that id."""
    record = await get_backend().record(connection_id)
    address = None if record is None else record.get("address")
    if address is None:
        return Receipt(None, 0, False, False)
    if item is not None:
        await delivery.adeliver_to_connection(address=address, text=envelope.live(item.tail))
    if close:
        await close_remote(address, ServerClosed)
    return Receipt(None, int(item is not None), True, False)


async def apublish(
    *, channel: str, data, event_type: str = "message", sender: dict | None = None
) -> Receipt:
    """A message to every subscriber of a channel."""
    item = PushItem(Target("channel", channel), data, event_type, sender)
    return await apush(item=item)


async def asend(
    *,
    to: str,
    data,
    sender: dict | None,
    event_type: str = "message",
    correlation_id: str | None = None,
) -> Receipt:
    """A personal message from one principal to a user, or to a public
    account named `@handle`."""
    original_sender = None
    if to.startswith("@"):
        to = to[1:]
        if not (await directory.aaccounts()).get(to):
            raise Validation(
                f"No active public account @{to}.", fields={"to": ["unknown public account"]}
            )
        original_sender = next(iter((sender or {}).values()), None)
    if correlation_id is not None and sender:
        # The sender waits for replies on its own connections.
        await replies.aclaim_for_user(
            correlation_id, user=next(iter(sender.values())), ttl=settings.SEND_TIMEOUT_DEFAULT
        )
    item = PushItem(
        Target("user", to),
        data,
        event_type,
        sender,
        correlation_id,
        original_sender=original_sender,
    )
    return await apush(item=item)


def _active_accounts() -> list[dict]:
    return list(PublicAccount.objects.active().values("handle", "display_name", "description"))


async def apublic_accounts() -> list[dict]:
    """The active public accounts, each with its live connection count."""
    accounts = await database_sync_to_async(_active_accounts)()
    counts = await aconnection_counts([a["handle"] for a in accounts])
    for account in accounts:
        account["connections"] = counts[account["handle"]]
        account["online"] = account["connections"] > 0
    return accounts


@dataclass(slots=True)
class Conversation:
    """A send waiting for its replies: what `POST send` streams."""

    correlation_id: str
    receipt: Receipt
    addressed_to: str | None
    queue: asyncio.Queue
    timeout: float

    async def events(self):
        """("accepted", …), then ("response", …) per reply until one is final,
        or ("timeout", …); ("heartbeat", None) while nothing comes. The waiter
        is released however the conversation ends, the caller leaving included."""
        try:
            routed = [f"@{h}" for h in self.receipt.routed_to] or [self.addressed_to]
            yield (
                "accepted",
                {
                    "correlation_id": self.correlation_id,
                    "routed_to": routed,
                    "online": self.receipt.online,
                    "id": self.receipt.id,
                    "delivered": self.receipt.delivered,
                    "stored": self.receipt.stored,
                },
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.timeout
            while (remaining := deadline - loop.time()) > 0:
                wait = min(remaining, settings.SSE_HEARTBEAT_INTERVAL)
                try:
                    reply = await asyncio.wait_for(self.queue.get(), wait)
                except TimeoutError:
                    if deadline > loop.time():
                        yield "heartbeat", None
                    continue
                yield "response", reply
                if reply["is_final"]:
                    return
            yield "timeout", {"correlation_id": self.correlation_id, "timeout": self.timeout}
        finally:
            await replies.aforget(self.correlation_id)


async def asend_with_reply(
    *,
    user_id: str | None,
    data,
    timeout: float,  # noqa: ASYNC109 (bounds the conversation, not this call)
    event_type: str = "message",
    correlation_id: str | None = None,
    ts: float | None = None,
    event_id: str | None = None,
) -> Conversation:
    """Send a message to a user (or the public accounts `data.message`
    @mentions) and wait for the replies to its correlation id."""
    if isinstance(data, dict) and isinstance(data.get("correlation_id"), str):
        correlation_id = data["correlation_id"]
    correlation_id = correlation_id or uuid.uuid4().hex
    if isinstance(data, dict) and "correlation_id" not in data:
        data = {**data, "correlation_id": correlation_id}  # where seed 000 clients read it
    fields = {
        "data": data,
        "event_type": event_type,
        "correlation_id": correlation_id,
        "ts": ts,
        "event_id": event_id,
    }
    if user_id is not None:
        items = [PushItem(Target("user", user_id), **fields)]
    else:
        handles = await mentions.amentioned(data)
        if not handles:
            raise Validation(
                "Give `user_id`, or @mention an active public account in `data.message`.",
                fields={"user_id": ["required"]},
            )
        items = [PushItem(Target("user", h), routed=True, **fields) for h in handles]
    queue = await replies.aclaim_for_stream(correlation_id, ttl=timeout)
    try:
        receipts = await apush_batch(items=items)
    except BaseException:
        await replies.aforget(correlation_id)
        raise
    if user_id is None:
        receipt = Receipt.combined(receipts, [item.target.name for item in items])
    else:
        receipt = receipts[0]
    return Conversation(correlation_id, receipt, user_id, queue, timeout)


async def apublish_live(*, channel: str, data, sender: dict | None = None) -> Receipt:
    """A message to the subscribers connected to a channel now, and only to
    them: it does not enter the channel's history, so it is never replayed
    and has no id (`"id": null`); `delivered` counts the subscribers that
    the registry shows across the gateway."""
    tail = envelope.encode_tail(event_type="message", data=data, channel=channel, sender=sender)
    # `tail` follows an id string (`…","event_type":…}`); a live frame has none.
    text = '{"type":"message","id":null,' + tail[2:]
    subscribers = len(await registry.aconnections(channel=channel))
    await get_backend().publish_live(addressing.channel_stream(channel), text)
    return Receipt(None, subscribers, subscribers > 0, False)
