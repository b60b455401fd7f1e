"""What the transports call: push, batch, publish, send.

Keyword-only and async; the WebSocket consumer and the HTTP API both come
here, so a rule written once holds for both.
"""

from dataclasses import dataclass, field

from . import delivery, envelope
from .addressing import Target
from .delivery import Receipt


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
            ),
        )


async def apush(*, item: PushItem) -> Receipt:
    """Deliver one message to a user, a channel or everyone."""
    return await delivery.adeliver(item.target, item.tail)


async def apush_batch(*, items: list[PushItem]) -> list[Receipt]:
    """Deliver already-validated messages, in order, in one round trip."""
    if not items:
        return []
    return await delivery.adeliver_many([(item.target, item.tail) for item in items])


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
    """A personal message from one principal to a user."""
    item = PushItem(Target("user", to), data, event_type, sender, correlation_id)
    return await apush(item=item)
