"""The message envelope, encoded once and joined with its id."""

import json

import orjson
import pytest

from bridge import envelope
from bridge.errors import Validation


def test_frame_is_valid_json_with_the_id_up_front():
    tail = envelope.encode_tail(
        event_type="note",
        data={"text": "héllo", "n": [1, 2]},
        channel="news",
        sender={"user": "alice"},
        correlation_id="c1",
        ts=1704067200.5,
    )
    text = envelope.frame("1704067200123-4", tail)
    assert text.startswith('{"type":"message","id":"1704067200123-4",')
    message = json.loads(text)
    assert list(message)[:2] == ["type", "id"]
    assert message == {
        "type": "message",
        "id": "1704067200123-4",
        "event_type": "note",
        "data": {"text": "héllo", "n": [1, 2]},
        "channel": "news",
        "from": {"user": "alice"},
        "correlation_id": "c1",
        "ts": 1704067200.5,
    }


def test_one_tail_joins_with_any_id():
    tail = envelope.encode_tail(event_type="message", data=None, ts=1.0)
    first = orjson.loads(envelope.frame("1-0", tail))
    second = orjson.loads(envelope.frame("2-7", tail))
    assert first["id"] == "1-0"
    assert second["id"] == "2-7"
    assert {k: v for k, v in first.items() if k != "id"} == {
        k: v for k, v in second.items() if k != "id"
    }


def test_defaults():
    message = orjson.loads(envelope.frame("1-0", envelope.encode_tail(event_type="m", data=[])))
    assert message["channel"] is None
    assert message["from"] is None
    assert message["correlation_id"] is None
    assert isinstance(message["ts"], float)
    assert "event_id" not in message


def test_event_id_is_carried_when_given():
    tail = envelope.encode_tail(event_type="m", data=1, ts=2.0, event_id="123")
    assert orjson.loads(envelope.frame("1-0", tail))["event_id"] == "123"


@pytest.mark.parametrize("data", [None, 0, "", "text", [None], {"nested": {"x": [1.5]}}])
def test_any_json_data_round_trips(data):
    tail = envelope.encode_tail(event_type="m", data=data, ts=1.0)
    assert orjson.loads(envelope.frame("1-0", tail))["data"] == data


def test_quotes_and_control_characters_in_values_are_escaped():
    data = {"q": '","id":"forged', "nl": "a\nb\u0000"}
    tail = envelope.encode_tail(event_type='e"v', data=data, ts=1.0)
    message = json.loads(envelope.frame("9-9", tail))
    assert message["id"] == "9-9"
    assert message["data"] == data
    assert message["event_type"] == 'e"v'


@pytest.mark.parametrize("data", [2**70, -(2**70), {"n": 2**64}, [object()], {1: "int key"}])
def test_unencodable_data_is_a_validation_error(data):
    with pytest.raises(Validation) as info:
        envelope.encode_tail(event_type="m", data=data)
    assert info.value.code == "validation"
    assert "data" in info.value.fields


def test_dumps_encodes_control_frames():
    text = envelope.dumps({"type": "welcome", "user": "é", "n": 1})
    assert isinstance(text, str)
    assert json.loads(text) == {"type": "welcome", "user": "é", "n": 1}
