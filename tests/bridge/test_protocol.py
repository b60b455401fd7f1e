"""Client frames: actions, seed aliases and validation."""

import orjson
import pytest

from bridge import protocol
from bridge.errors import InvalidJSON, UnknownAction, Validation


def parse(frame) -> protocol.Request:
    return protocol.parse(orjson.dumps(frame).decode())


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("publish", "publish"),
        ("send_to_channel", "publish"),
        ("chat_message", "publish"),
        ("send", "send"),
        ("send_to_user", "send"),
    ],
)
def test_aliases(name, action):
    fields = {"channel": "room"} if action == "publish" else {"to": "bob"}
    request = parse({"action": name, "data": 1, **fields})
    assert request.action == action
    assert request.fields["data"] == 1


@pytest.mark.parametrize("action", ["ping", "pong"])
def test_type_is_an_alias_of_action(action):
    request = parse({"type": action, "request_id": "r"})
    assert request.action == action
    assert request.request_id == "r"
    assert request.fields == {}


def test_action_wins_over_type():
    assert parse({"action": "ping", "type": "pong"}).action == "ping"


def test_subscribe_fields():
    request = parse({"action": "subscribe", "channel": "a.b:c=d@e-f_g", "since": "1-0"})
    assert request.fields == {"channel": "a.b:c=d@e-f_g", "since": "1-0"}
    assert parse({"action": "subscribe", "channel": "x"}).fields["since"] is None


def test_publish_defaults():
    request = parse({"action": "publish", "channel": "room"})
    assert request.fields == {"channel": "room", "data": None, "event_type": "message"}


def test_chat_message_wraps_a_bare_message():
    request = parse({"type": "chat_message", "channel": "room", "message": "hi"})
    assert request.fields["data"] == {"message": "hi"}


def test_send_fields():
    request = parse(
        {"action": "send", "to": "bob", "data": {"x": 1}, "event_type": "e", "correlation_id": "c"}
    )
    assert request.fields == {
        "to": "bob",
        "data": {"x": 1},
        "event_type": "e",
        "correlation_id": "c",
    }


def test_send_accepts_user_id_for_to():
    assert parse({"action": "send_to_user", "user_id": "bob"}).fields["to"] == "bob"


def test_send_correlation_id_from_data():
    request = parse({"action": "send", "to": "bob", "data": {"correlation_id": "inner"}})
    assert request.fields["correlation_id"] == "inner"
    request = parse(
        {"action": "send", "to": "bob", "correlation_id": "outer", "data": {"correlation_id": "x"}}
    )
    assert request.fields["correlation_id"] == "outer"


def test_invalid_json():
    with pytest.raises(InvalidJSON) as info:
        protocol.parse("{nope")
    assert info.value.code == "invalid_json"
    assert info.value.close_code is None


@pytest.mark.parametrize("text", ["[]", "1", '"ping"', "null", "true"])
def test_non_object(text):
    with pytest.raises(Validation):
        protocol.parse(text)


@pytest.mark.parametrize(
    ("frame", "error", "field"),
    [
        ({"request_id": "r"}, Validation, "action"),
        ({"action": None, "request_id": "r"}, Validation, "action"),
        ({"action": ["ping"], "request_id": "r"}, Validation, "action"),
        ({"action": "fly", "request_id": "r"}, UnknownAction, None),
        ({"action": "subscribe", "request_id": "r"}, Validation, "channel"),
        ({"action": "subscribe", "channel": "", "request_id": "r"}, Validation, "channel"),
        ({"action": "subscribe", "channel": "a b", "request_id": "r"}, Validation, "channel"),
        ({"action": "subscribe", "channel": "x" * 101, "request_id": "r"}, Validation, "channel"),
        ({"action": "unsubscribe", "channel": 3, "request_id": "r"}, Validation, "channel"),
        (
            {"action": "publish", "channel": "c", "event_type": "", "request_id": "r"},
            Validation,
            "event_type",
        ),
        (
            {"action": "publish", "channel": "c", "event_type": "e" * 101, "request_id": "r"},
            Validation,
            "event_type",
        ),
        ({"action": "send", "request_id": "r"}, Validation, "to"),
        ({"action": "send", "to": "", "request_id": "r"}, Validation, "to"),
        ({"action": "send", "to": "a\nb", "request_id": "r"}, Validation, "to"),
        (
            {"action": "send", "to": "b", "correlation_id": "", "request_id": "r"},
            Validation,
            "correlation_id",
        ),
        (
            {"action": "send", "to": "b", "correlation_id": "c" * 201, "request_id": "r"},
            Validation,
            "correlation_id",
        ),
        (
            {"action": "send", "to": "b", "data": {"correlation_id": 1}, "request_id": "r"},
            Validation,
            "correlation_id",
        ),
    ],
)
def test_errors_carry_the_request_id(frame, error, field):
    with pytest.raises(error) as info:
        parse(frame)
    assert info.value.request_id == "r"
    rendered = info.value.as_frame()
    assert rendered["type"] == "error"
    assert rendered["code"] == error.code
    assert rendered["request_id"] == "r"
    if field is not None:
        assert field in rendered["fields"]


def test_unknown_action_lists_the_known_ones():
    with pytest.raises(UnknownAction) as info:
        parse({"action": "fly"})
    for name in ("ping", "subscribe", "publish", "send_to_channel", "send_to_user"):
        assert name in info.value.message
    assert "request_id" not in info.value.as_frame()


def test_request_id_of_any_json_type_is_kept():
    assert parse({"action": "ping", "request_id": 5}).request_id == 5
    assert parse({"action": "ping", "request_id": {"n": 1}}).request_id == {"n": 1}
    assert parse({"action": "ping"}).request_id is None
