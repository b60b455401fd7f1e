"""What the transports call: push, batch, publish, send.

Keyword-only and async; the WebSocket consumer and the HTTP API both come
here, so a rule written once holds for both.
"""

import dataclasses
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async

from accounts import directory
from accounts.models import PublicAccount

from . import delivery, envelope, mentions
from .addressing import Target
from .connections import aconnection_counts
from .delivery import Receipt
from .errors import Validation


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
                original_sender=self.original_sender,
            ),
        )


async def _arouted(item: PushItem) -> list[PushItem] | None:
    """The messages a personal message becomes when it @mentions public
    accounts (one per account), or None when it goes where it is addressed."""
    if item.target.kind != "user":
        return None
    handles = await mentions.amentioned(item.data)
    if not handles:
        return None
    if item.original_sender is not None:
        # Addressed to an account already (`to: "@ci_bot"`): it keeps its copy.
        handles = list(dict.fromkeys([item.target.name, *handles]))
    sender = item.original_sender or next(iter((item.sender or {}).values()), item.target.name)
    return [
        dataclasses.replace(item, target=Target("user", handle), original_sender=sender)
        for handle in handles
    ]


async def apush(*, item: PushItem) -> Receipt:
    """Deliver one message to a user (or the accounts it @mentions), a
    channel or everyone."""
    return (await apush_batch(items=[item]))[0]


async def apush_batch(*, items: list[PushItem]) -> list[Receipt]:
    """Deliver already-validated messages, in order, in one round trip."""
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
    accounts = await sync_to_async(_active_accounts)()
    counts = await aconnection_counts([a["handle"] for a in accounts])
    for account in accounts:
        account["connections"] = counts[account["handle"]]
        account["online"] = account["connections"] > 0
    return accounts
