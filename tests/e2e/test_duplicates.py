"""WS_DUPLICATE_POLICY: a user's second connection is refused, or replaces the first."""

import httpx
import pytest

from tests.servers import push, start_gateway, wait_connections, ws_client, ws_url


@pytest.fixture(scope="module")
def rejecting(tmp_path_factory):
    server = start_gateway(tmp_path_factory.mktemp("reject"), WS_DUPLICATE_POLICY="reject")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replacing(tmp_path_factory):
    server = start_gateway(tmp_path_factory.mktemp("replace"), WS_DUPLICATE_POLICY="replace")
    yield server
    server.stop()


async def test_reject_closes_the_second_connection_with_1008(rejecting, unique):
    user = unique("twice")
    async with httpx.AsyncClient(base_url=rejecting.http, timeout=10) as http:
        async with ws_client(ws_url(rejecting, user_id=user)) as first:
            async with ws_client(ws_url(rejecting, user_id=user), welcome=False) as second:
                code, frames = await second.closed()
                assert code == 1008
                assert [f["type"] for f in frames] == ["error"]
                assert frames[0]["code"] == "duplicate_connection"
            await first.ping()
            receipt = await push(http, user_id=user, data="still yours")
            assert receipt["delivered"] == 1
            assert (await first.expect("message"))["id"] == receipt["id"]
        # Once the first is gone, the user may connect again.
        await wait_connections(rejecting, 0)
        async with ws_client(ws_url(rejecting, user_id=user)) as again:
            await again.ping()


async def test_reject_leaves_other_users_alone(rejecting, unique):
    async with (
        ws_client(ws_url(rejecting, user_id=unique("one"))) as a,
        ws_client(ws_url(rejecting, user_id=unique("two"))) as b,
    ):
        await a.ping()
        await b.ping()


async def test_replace_closes_the_first_connection_with_1008(replacing, unique):
    user = unique("newer")
    async with (
        httpx.AsyncClient(base_url=replacing.http, timeout=10) as http,
        ws_client(ws_url(replacing, user_id=user)) as first,
        ws_client(ws_url(replacing, user_id=user)) as second,
    ):
        code, frames = await first.closed()
        assert code == 1008
        assert [f["type"] for f in frames] == ["error"]
        assert frames[0]["code"] == "replaced"
        await wait_connections(replacing, 1)
        receipt = await push(http, user_id=user, data="for the newer one")
        assert receipt["delivered"] == 1
        assert (await second.expect("message"))["id"] == receipt["id"]
