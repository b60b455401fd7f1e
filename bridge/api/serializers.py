"""What the HTTP API accepts and answers."""

import functools
import re

from django.conf import settings
from rest_framework import serializers

from ..addressing import Target, is_valid_channel, is_valid_user_id
from ..services import PushItem


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know: a typo must not pass as a default."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)

    @classmethod
    def validate_body(cls, data) -> dict:
        """`data` validated, or ValidationError as `is_valid(raise_exception=True)`
        raises it. One long-lived instance validates every body, as a list
        serializer's one child validates every item: its fields are built once
        per process instead of once per request (copying them is most of a
        serializer's cost)."""
        return _validator(cls).run_validation(data)

    @functools.cached_property
    def _writable_fields(self) -> tuple:
        # DRF walks its field mapping on every validation; the fields of a
        # long-lived validator never change.
        return tuple(field for field in self.fields.values() if not field.read_only)


@functools.cache
def _validator(serializer_class) -> serializers.Serializer:
    return serializer_class()


class AnyJSONField(serializers.JSONField):
    """Any JSON value, null included."""

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        # Every body is parsed from JSON (codec.ORJSONParser): its values are
        # JSON already, without DRF's encoding of them again to make sure.
        return data


class StringField(serializers.CharField):
    """A JSON string, not anything that prints as one (5 is not "5")."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class NumberField(serializers.FloatField):
    """A JSON number; true and "1" are not numbers."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


class BoolField(serializers.BooleanField):
    """A JSON boolean; "yes" and 1 are not booleans."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class PushIn(StrictSerializer):
    user_id = StringField(required=False, max_length=200, trim_whitespace=False)
    channel = StringField(required=False, max_length=100, trim_whitespace=False)
    broadcast = BoolField(required=False, default=False)
    connection_id = StringField(
        required=False,
        max_length=200,
        help_text="One live connection (its `welcome` frame's id), live only: never stored.",
    )
    data = AnyJSONField(required=False, default=None)
    event_type = StringField(required=False, default="message", max_length=100)
    event_id = StringField(required=False, max_length=200)
    timestamp = NumberField(required=False)

    def validate_user_id(self, value):
        if not is_valid_user_id(value):
            raise serializers.ValidationError("Must be 1 to 200 printable characters.")
        return value

    def validate_channel(self, value):
        if not is_valid_channel(value):
            raise serializers.ValidationError("Must match [A-Za-z0-9_.:=@-]{1,100}.")
        return value

    def validate(self, attrs):
        targets = [t for t in ("user_id", "channel", "connection_id") if t in attrs] + (
            ["broadcast"] if attrs.get("broadcast") else []
        )
        if len(targets) != 1:
            raise serializers.ValidationError(
                "Give exactly one target: `user_id`, `channel`, `connection_id` "
                "or `broadcast: true`."
            )
        return attrs

    @classmethod
    def item(cls, data) -> PushItem:
        """The service's message for one push body, validated."""
        return push_item(cls.validate_body(data))


def push_item(attrs: dict) -> PushItem:
    """The service's view of one validated push body."""
    if "user_id" in attrs:
        target = Target("user", attrs["user_id"])
    elif "channel" in attrs:
        target = Target("channel", attrs["channel"])
    elif "connection_id" in attrs:
        target = Target("connection", attrs["connection_id"])
    else:
        target = Target("broadcast")
    data = attrs["data"]
    # Seed 000 carries the correlation id inside `data`.
    correlation_id = data.get("correlation_id") if isinstance(data, dict) else None
    return PushItem(
        target=target,
        data=data,
        event_type=attrs["event_type"],
        correlation_id=correlation_id if isinstance(correlation_id, str) else None,
        ts=attrs.get("timestamp"),
        event_id=attrs.get("event_id"),
    )


class ReceiptOut(serializers.Serializer):
    id = serializers.CharField(
        allow_null=True,
        help_text="Message id, increasing within its stream; null for a live-only message.",
    )
    delivered = serializers.IntegerField(help_text="Connections it was written to.")
    online = serializers.BooleanField(help_text="Whether the target had a live connection.")
    stored = serializers.BooleanField(help_text="Kept for the target's next connection.")
    routed_to = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="The public accounts (@handle) an @mention routed it to instead.",
    )


class PublicAccountOut(serializers.Serializer):
    handle = serializers.CharField()
    display_name = serializers.CharField()
    description = serializers.CharField()
    online = serializers.BooleanField(help_text="Whether it has a live connection now.")
    connections = serializers.IntegerField()


class TransportStatsOut(serializers.Serializer):
    total = serializers.IntegerField(help_text="Live connections over this transport.")
    max = serializers.IntegerField(help_text="Connections each process accepts.")
    users = serializers.IntegerField(help_text="Distinct principals connected.")


class ChannelStatsOut(serializers.Serializer):
    total = serializers.IntegerField(help_text="Channels with at least one subscriber.")
    subscriptions = serializers.IntegerField()


class StatsOut(serializers.Serializer):
    websocket = TransportStatsOut()
    sse = TransportStatsOut()
    channels = ChannelStatsOut()
    total_connections = serializers.IntegerField()
    public_accounts_online = serializers.IntegerField()


class BatchOut(serializers.Serializer):
    results = ReceiptOut(many=True)
    delivered = serializers.IntegerField()


def batch_items(payload) -> list:
    """The list of push bodies of a batch: a JSON list or `{"messages": [...]}`."""
    if isinstance(payload, dict) and set(payload) == {"messages"}:
        payload = payload["messages"]
    if not isinstance(payload, list):
        raise serializers.ValidationError(
            {"non_field_errors": ["A batch is a JSON list, or an object with `messages`."]}
        )
    if not payload:
        raise serializers.ValidationError(
            {"non_field_errors": ["A batch needs at least one item."]}
        )
    if len(payload) > settings.BATCH_MAX:
        raise serializers.ValidationError(
            {"non_field_errors": [f"A batch holds at most {settings.BATCH_MAX} items."]}
        )
    return payload


def validate_batch(payload) -> list[PushItem]:
    """Every item validated before any is delivered; errors keyed by index.

    One list serializer validates them all: its fields are built once, not
    once per item.
    """
    serializer = PushIn(data=batch_items(payload), many=True)
    if not serializer.is_valid():
        raise serializers.ValidationError(
            {str(index): error for index, error in serializer.errors.items()}
        )
    return [push_item(attrs) for attrs in serializer.validated_data]


class SendIn(StrictSerializer):
    user_id = StringField(required=False, max_length=200, trim_whitespace=False)
    data = AnyJSONField(required=False, default=None)
    event_type = StringField(required=False, default="message", max_length=100)
    event_id = StringField(required=False, max_length=200)
    timestamp = NumberField(required=False)
    correlation_id = StringField(required=False, max_length=200)
    timeout = NumberField(required=False, help_text="Seconds to wait for replies.")

    def validate_user_id(self, value):
        if not is_valid_user_id(value):
            raise serializers.ValidationError("Must be 1 to 200 printable characters.")
        return value

    def validate_data(self, value):
        if isinstance(value, dict) and "correlation_id" in value:
            correlation_id = value["correlation_id"]
            if not isinstance(correlation_id, str) or not 0 < len(correlation_id) <= 200:
                raise serializers.ValidationError(
                    {"correlation_id": ["Must be a string of 1 to 200 characters."]}
                )
        return value

    def validate_timeout(self, value):
        if not 0 < value <= settings.SEND_TIMEOUT_MAX:
            raise serializers.ValidationError(
                f"Must be more than 0 and at most {settings.SEND_TIMEOUT_MAX} seconds."
            )
        return value

    @classmethod
    def service_kwargs(cls, data) -> dict:
        """`asend_with_reply`'s arguments for one send body, validated."""
        attrs = cls.validate_body(data)
        return {
            "user_id": attrs.get("user_id"),
            "data": attrs["data"],
            "timeout": attrs.get("timeout", settings.SEND_TIMEOUT_DEFAULT),
            "event_type": attrs["event_type"],
            "correlation_id": attrs.get("correlation_id"),
            "ts": attrs.get("timestamp"),
            "event_id": attrs.get("event_id"),
        }


class ConnectionEventIn(StrictSerializer):
    """Seed 001's event: `data`, and the event's `name` (its `event_type`)."""

    name = StringField(required=False, default="message", max_length=100)
    data = AnyJSONField(help_text="Delivered as the envelope's `data`.")


class InternalSendIn(StrictSerializer):
    """Seed 001's `POST /internal/send`: an event to one connection, and/or close it."""

    token = StringField(max_length=200, help_text="The connection id.")
    event = ConnectionEventIn(required=False)
    close = BoolField(
        required=False, default=False, help_text="Close it (after the event): `server_closed`."
    )

    def service_kwargs(self) -> dict:
        attrs = self.validated_data
        event = attrs.get("event")
        item = None
        if event is not None:
            target = Target("connection", attrs["token"])
            item = PushItem(target=target, data=event["data"], event_type=event["name"])
        return {"connection_id": attrs["token"], "item": item, "close": attrs["close"]}


# -- The connection registry ----------------------------------------------------------
TRANSPORT_CHOICES = ("websocket", "sse")


class UserIdField(StringField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 200)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not is_valid_user_id(value):
            raise serializers.ValidationError("Must be 1 to 200 printable characters.")
        return value


class ChannelField(StringField):
    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not is_valid_channel(value):
            raise serializers.ValidationError("Must match [A-Za-z0-9_.:=@-]{1,100}.")
        return value


class ConnectionsQuery(StrictSerializer):
    """The filters of `GET connections`, from the query string."""

    user_id = UserIdField(required=False, help_text="Only this principal's connections.")
    channel = ChannelField(required=False, help_text="Only connections subscribed to it.")
    transport = serializers.ChoiceField(
        choices=TRANSPORT_CHOICES, required=False, help_text="Only this transport."
    )


def query_data(query_params, *, ignore=("format",)) -> dict:
    """A query string as a flat dict; a parameter given twice is refused
    (which value was meant is a guess), and `ignore` (DRF's `format`) is left out."""
    repeated = sorted(
        k for k in query_params if k not in ignore and len(query_params.getlist(k)) > 1
    )
    if repeated:
        raise serializers.ValidationError({k: ["Give this parameter once."] for k in repeated})
    return {k: v for k, v in query_params.items() if k not in ignore}


class ConnectionOut(serializers.Serializer):
    id = serializers.CharField(help_text="The connection id (its `welcome` frame's).")
    user = serializers.CharField(
        allow_null=True, help_text="The principal; null for an anonymous SSE stream."
    )
    kind = serializers.CharField(help_text="`user`, `account` (a public account) or `anonymous`.")
    transport = serializers.ChoiceField(choices=TRANSPORT_CHOICES)
    instance = serializers.CharField(help_text="The gateway process it lives on.")
    channels = serializers.ListField(child=serializers.CharField())
    connected_at = serializers.FloatField(help_text="Seconds since the epoch.")
    last_seen = serializers.FloatField(
        help_text="When the client was last heard from, as the registry last recorded it."
    )


class ChannelOut(serializers.Serializer):
    channel = serializers.CharField()
    connections = serializers.IntegerField(help_text="Connections subscribed to it.")
    users = serializers.ListField(
        child=serializers.CharField(), help_text="Distinct principals subscribed, sorted."
    )
    presence = serializers.ListField(
        child=serializers.CharField(),
        help_text="The same principals: what a WebSocket `presence` query answers.",
    )
    subscribers = ConnectionOut(many=True)


class TransportCountsOut(serializers.Serializer):
    websocket = serializers.IntegerField()
    sse = serializers.IntegerField()


class UserOut(serializers.Serializer):
    user = serializers.CharField()
    online = serializers.BooleanField(help_text="Whether it has a live connection anywhere.")
    connections = serializers.IntegerField()
    transports = TransportCountsOut()
    channels = serializers.ListField(
        child=serializers.CharField(), help_text="Channels any of its connections is subscribed to."
    )


class IntField(serializers.IntegerField):
    """A JSON integer; true, 1.5 and "1" are not integers."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


# -- Seed 002's push paths ------------------------------------------------------------
class SeedBroadcastIn(StrictSerializer):
    """`POST /ws/broadcast`: `message` to every connection."""

    message = AnyJSONField(allow_null=False, help_text="Delivered as the envelope's `data`.")

    def to_item(self) -> PushItem:
        return PushItem(target=Target("broadcast"), data=self.validated_data["message"])


class SeedChannelMessageIn(StrictSerializer):
    """`POST /ws/send-to-channel`: `message` to a channel's subscribers."""

    channel = ChannelField()
    message = AnyJSONField(allow_null=False, help_text="Delivered as the envelope's `data`.")
    persist = BoolField(
        required=False,
        default=True,
        help_text="true: kept in the channel's history (replayed with `since`); "
        "false: to the live subscribers only, with `id: null`.",
    )

    def to_item(self) -> PushItem:
        attrs = self.validated_data
        return PushItem(target=Target("channel", attrs["channel"]), data=attrs["message"])


class SeedSSEChannelIn(StrictSerializer):
    """`POST /sse/send-to-channel`: an event named `event` to a channel."""

    channel = ChannelField()
    event = StringField(
        required=False, default="message", max_length=100, help_text="The `event_type`."
    )
    data = AnyJSONField(required=False, default=None)

    def to_item(self) -> PushItem:
        attrs = self.validated_data
        return PushItem(
            target=Target("channel", attrs["channel"]),
            data=attrs["data"],
            event_type=attrs["event"],
        )


NOTIFICATION_TYPES = ("info", "success", "warning", "error")


class SeedNotificationIn(StrictSerializer):
    """`POST /sse/notification`: a `notification` event, to everyone unless
    `user_id` or `channel` names whom."""

    title = StringField(max_length=200)
    content = StringField(allow_blank=True, trim_whitespace=False)
    type = serializers.ChoiceField(choices=NOTIFICATION_TYPES, required=False, default="info")
    auto_hide = BoolField(required=False)
    duration = IntField(required=False, min_value=0, help_text="Milliseconds.")
    user_id = UserIdField(required=False)
    channel = ChannelField(required=False)

    def validate(self, attrs):
        if "user_id" in attrs and "channel" in attrs:
            raise serializers.ValidationError(
                "Give at most one target: `user_id` or `channel` (neither: everyone)."
            )
        return attrs

    def to_item(self) -> PushItem:
        attrs = self.validated_data
        data = {name: attrs[name] for name in ("title", "content", "type")}
        data.update({name: attrs[name] for name in ("auto_hide", "duration") if name in attrs})
        if "user_id" in attrs:
            target = Target("user", attrs["user_id"])
        elif "channel" in attrs:
            target = Target("channel", attrs["channel"])
        else:
            target = Target("broadcast")
        return PushItem(target=target, data=data, event_type="notification")


# -- Connection tokens ----------------------------------------------------------------
CHANNEL_GLOB = re.compile(r"[A-Za-z0-9_.:=@*?\[\]!-]{1,100}")
MAX_TOKEN_CHANNELS = 100
MAX_TOKEN_TTL = 24 * 3600


class TokenIn(StrictSerializer):
    """`POST tokens`: a connection token for `user_id`."""

    user_id = UserIdField()
    channels = serializers.ListField(
        child=StringField(trim_whitespace=False),
        required=False,
        default=list,
        max_length=MAX_TOKEN_CHANNELS,
        help_text="Private channels the holder may use; shell-style globs (`private-team-*`).",
    )
    ttl = IntField(
        required=False,
        min_value=1,
        max_value=MAX_TOKEN_TTL,
        help_text="Lifetime in seconds; JWT_TTL when absent.",
    )

    def validate_channels(self, value):
        bad = [name for name in value if not CHANNEL_GLOB.fullmatch(name)]
        if bad:
            raise serializers.ValidationError(
                "Each must match [A-Za-z0-9_.:=@-]{1,100}, with the globs * ? [ ] !."
            )
        return value


class TokenOut(serializers.Serializer):
    token = serializers.CharField(help_text="A JWT: `?token=` or `Authorization: Bearer`.")
    user_id = serializers.CharField()
    expires_at = serializers.IntegerField(help_text="Its `exp`, in seconds since the epoch.")
