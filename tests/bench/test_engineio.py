"""The Engine.IO v4 / Socket.IO v5 codec of the comparison's load generator."""

import pytest

from bench import engineio


def test_open_packet_is_decoded():
    packet = engineio.decode(b'0{"sid":"abc","upgrades":[],"pingInterval":25000}')
    assert packet.eio == engineio.EIO_OPEN
    assert packet.data["sid"] == "abc"
    assert packet.data["pingInterval"] == 25000


def test_ping_and_close():
    assert engineio.decode(b"2").eio == engineio.EIO_PING
    assert engineio.decode("1").eio == engineio.EIO_CLOSE
    assert engineio.PONG == b"3"


def test_namespace_connect_answer():
    packet = engineio.decode(b'40{"sid":"x1"}')
    assert (packet.eio, packet.sio, packet.namespace) == (4, engineio.CONNECT, "/")
    assert packet.ack_id is None
    assert packet.data == {"sid": "x1"}
    assert engineio.CONNECT_DEFAULT == b"40"


def test_event_without_and_with_ack_id():
    packet = engineio.decode(b'42["message",{"k":1,"s":2,"t":3.5}]')
    assert packet.sio == engineio.EVENT
    assert packet.event == "message"
    assert packet.args == [{"k": 1, "s": 2, "t": 3.5}]
    assert packet.ack_id is None

    packet = engineio.decode(b'4217["request",{"n":1}]')
    assert packet.event == "request"
    assert packet.ack_id == 17
    assert packet.args == [{"n": 1}]


def test_ack_and_namespace():
    packet = engineio.decode(b'43/chat,5[{"ok":true},2]')
    assert packet.sio == engineio.ACK
    assert packet.namespace == "/chat"
    assert packet.ack_id == 5
    assert packet.args == [{"ok": True}, 2]
    assert packet.event is None


def test_connect_error_and_disconnect():
    assert engineio.decode(b'44{"message":"no"}').data == {"message": "no"}
    packet = engineio.decode(b"41")
    assert packet.sio == engineio.DISCONNECT
    assert packet.data is None


def test_encode_round_trips():
    frame = engineio.event("publish", {"channel": "c", "data": [1, 2]})
    assert frame == b'42["publish",{"channel":"c","data":[1,2]}]'
    assert engineio.event("send", "x", ack_id=12) == b'4212["send","x"]'
    assert engineio.ack(12, {"r": 1}) == b'4312[{"r":1}]'
    assert engineio.event("e", namespace="/admin") == b'42/admin,["e"]'
    for frame in (
        engineio.event("a", 1, 2, ack_id=3),
        engineio.ack(9, "x"),
        engineio.event("b", namespace="/n", ack_id=4),
    ):
        packet = engineio.decode(frame)
        assert (
            engineio.encode(
                packet.sio, packet.data, ack_id=packet.ack_id, namespace=packet.namespace
            )
            == frame
        )


@pytest.mark.parametrize("frame", [b"", b"9", b"4", b"4x", b'45-["bin"]'])
def test_bad_packets_are_refused(frame):
    with pytest.raises(ValueError):
        engineio.decode(frame)
