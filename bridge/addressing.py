"""The one address book: stream names, and the Redis keys built from them.

A *stream* is what a message is addressed to and what a history belongs to:
a principal's personal stream, a channel, or the broadcast stream that every
connection hears. Nothing else in the code builds these names.
"""

import re
from dataclasses import dataclass

from django.conf import settings

from accounts.identity import is_valid_user_id  # noqa: F401 (the address rule for users)

CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.:=@-]{1,100}")

BROADCAST = "b"


@dataclass(frozen=True, slots=True)
class Target:
    """Who a message is for: a user, a channel, or everyone."""

    kind: str  # "user" | "channel" | "broadcast" | "connection" (one, by its id)
    name: str = ""

    @property
    def stream(self) -> str:
        if self.kind == "user":
            return user_stream(self.name)
        if self.kind == "channel":
            return channel_stream(self.name)
        if self.kind == "connection":
            raise ValueError("A message to one connection enters no stream.")
        return BROADCAST


def user_stream(user_id: str) -> str:
    return f"u:{user_id}"


def channel_stream(name: str) -> str:
    return f"c:{name}"


def is_valid_channel(name: object) -> bool:
    return isinstance(name, str) and CHANNEL_NAME.fullmatch(name) is not None


def redis_key(*parts: str) -> str:
    """A Redis key or pub/sub channel under the gateway's prefix."""
    return ":".join((settings.REDIS_PREFIX, *parts))


def history_key(stream: str) -> str:
    return redis_key("h", stream)


def bus_channel(stream: str) -> str:
    return redis_key("p", stream)


def pending_key(user_id: str) -> str:
    return redis_key("pend", user_id)


def user_connections_key(user_id: str) -> str:
    return redis_key("uconn", user_id)


def stream_listeners_key(stream: str) -> str:
    """Hash of process id -> number of its connections listening to a stream."""
    return redis_key("lst", stream)


def control_channel(process: str) -> str:
    """The pub/sub channel of messages for one process (replies, control events)."""
    return redis_key("ctl", process)


def correlation_key(correlation_id: str) -> str:
    """Which process waits for replies on a correlation id."""
    return redis_key("corr", correlation_id)


def members_key(channel: str) -> str:
    """Hash of connection id -> principal: who is subscribed to a channel."""
    return redis_key("mem", channel)


def member_users_key(channel: str) -> str:
    """Hash of principal -> its connections subscribed to a channel."""
    return redis_key("memu", channel)


def records_key(process: str) -> str:
    """Hash of connection id -> the connection's record, one per process."""
    return redis_key("conns", process)


def processes_key() -> str:
    """Set of the processes that have joined the gateway (live or not)."""
    return redis_key("procs")


def alive_prefix() -> str:
    return redis_key("alive", "")
