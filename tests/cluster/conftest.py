import uuid

import httpx
import pytest

from tests.servers import gateway_cluster


@pytest.fixture
def unique():
    """Names no other test uses: `unique("alice")` -> "alice-1f3a9c0d"."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def cluster(request, tmp_path_factory):
    """Two gateways on one Redis prefix and one PostgreSQL database, for the
    tests of one module."""
    with gateway_cluster(tmp_path_factory.mktemp(request.module.__name__)) as gateways:
        yield gateways


@pytest.fixture
async def api(cluster):
    """HTTP clients of gateway A and gateway B."""
    a, b = cluster
    async with (
        httpx.AsyncClient(base_url=a.http, timeout=20) as http_a,
        httpx.AsyncClient(base_url=b.http, timeout=20) as http_b,
    ):
        yield http_a, http_b
