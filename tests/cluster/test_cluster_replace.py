"""WS_DUPLICATE_POLICY=replace holds across processes."""

import httpx
import pytest

from tests.servers import gateway_cluster, push, wait_connections, ws_client, ws_url


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with gateway_cluster(
        tmp_path_factory.mktemp("replace"), WS_DUPLICATE_POLICY="replace"
    ) as gateways:
        yield gateways


async def test_a_connection_on_b_replaces_the_one_on_a(cluster, unique):
    a, b = cluster
    user = unique("roaming")
    async with (
        httpx.AsyncClient(base_url=a.http, timeout=20) as http_a,
        ws_client(ws_url(a, user_id=user)) as on_a,
        ws_client(ws_url(b, user_id=user)) as on_b,
    ):
        code, frames = await on_a.closed()
        assert code == 1008
        assert [f["type"] for f in frames] == ["error"]
        assert frames[0]["code"] == "replaced"
        await wait_connections(a, 0)
        receipt = await push(http_a, user_id=user, data="to the newer one")
        assert receipt["delivered"] == 1
        assert (await on_b.expect("message"))["id"] == receipt["id"]
        await on_b.ping()


async def test_other_users_are_not_replaced(cluster, unique):
    a, b = cluster
    async with (
        ws_client(ws_url(a, user_id=unique("one"))) as on_a,
        ws_client(ws_url(b, user_id=unique("two"))) as on_b,
    ):
        await on_a.ping()
        await on_b.ping()
