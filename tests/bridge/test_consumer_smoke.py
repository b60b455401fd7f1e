import pytest
from channels.testing import WebsocketCommunicator

from realtime.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def test_welcome_then_pushed_message():
    comm = WebsocketCommunicator(application, "/ws/?user_id=alice")
    connected, _ = await comm.connect()
    assert connected
    welcome = await comm.receive_json_from()
    assert welcome["type"] == "welcome"
    assert welcome["user"] == "alice"
    await comm.disconnect()
