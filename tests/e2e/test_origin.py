"""Browser handshakes must come from ALLOWED_ORIGINS; non-browser clients pass."""

import pytest
from websockets.exceptions import InvalidStatus

from tests.servers import start_gateway, ws_client, ws_url


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    server = start_gateway(
        tmp_path_factory.mktemp("origins"), ALLOWED_ORIGINS="http://good.example"
    )
    yield server
    server.stop()


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "http://good.example.evil.example", "https://good.example"],
)
async def test_foreign_origin_is_refused_with_403(guarded, unique, origin):
    with pytest.raises(InvalidStatus) as refused:
        async with ws_client(ws_url(guarded, user_id=unique("victim")), origin=origin):
            pass
    assert refused.value.response.status_code == 403


async def test_allowed_origin_is_accepted(guarded, unique):
    url = ws_url(guarded, user_id=unique("browser"))
    async with ws_client(url, origin="http://good.example") as ws:
        assert ws.welcome["type"] == "welcome"
        await ws.ping()


async def test_no_origin_is_accepted(guarded, unique):
    async with ws_client(ws_url(guarded, user_id=unique("wscat"))) as ws:
        assert ws.welcome["type"] == "welcome"
        await ws.ping()
