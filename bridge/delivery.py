"""The one emitter: every message enters its stream here, and only here.

History, the live fan-out of every transport and the receipt all come from
the same backend call, so "one id everywhere" holds by construction.
"""

from dataclasses import dataclass

from . import control, metrics
from .addressing import Target
from .backends import Outgoing, get_backend


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a sender learns: the message id, how many connections it reached,
    whether the target was online, and whether it was kept for later."""

    id: str
    delivered: int
    online: bool
    stored: bool
    # Public accounts an @mention routed the message to, instead of its address.
    routed_to: tuple[str, ...] = ()

    @classmethod
    def combined(cls, receipts: list["Receipt"], routed_to: list[str]) -> "Receipt":
        """One answer for a message delivered to several accounts (first id)."""
        return cls(
            receipts[0].id,
            sum(r.delivered for r in receipts),
            any(r.online for r in receipts),
            any(r.stored for r in receipts),
            tuple(routed_to),
        )

    def as_dict(self) -> dict:
        answer = {
            "id": self.id,
            "delivered": self.delivered,
            "online": self.online,
            "stored": self.stored,
        }
        if self.routed_to:
            answer["routed_to"] = [f"@{handle}" for handle in self.routed_to]
        return answer


def _outgoing(target: Target, tail: str) -> Outgoing:
    return Outgoing(target.stream, tail, target.name if target.kind == "user" else None)


def _receipt(target: Target, message_id: str, online: int) -> Receipt:
    # A broadcast is live only; a user's or channel's message is kept in its
    # history, and that is what an offline target will be handed.
    stored = online == 0 and target.kind != "broadcast"
    return Receipt(message_id, online, online > 0, stored)


async def adeliver_to_connection(*, address: str, text: str) -> None:
    """Write an encoded live-only message to one connection, on whichever
    process it lives."""
    await control.send(address, {"type": control.FRAME_EVENT, "text": text})
    metrics.PUBLISHED.labels("connection").inc()


async def adeliver_many(messages: list[tuple[Target, str]]) -> list[Receipt]:
    """Publish several encoded messages in one round trip, in order."""
    published = await get_backend().publish_many([_outgoing(t, tail) for t, tail in messages])
    receipts = []
    for (target, _), pub in zip(messages, published, strict=True):
        metrics.PUBLISHED.labels(target.kind).inc()
        receipts.append(_receipt(target, pub.id, pub.online))
    return receipts
