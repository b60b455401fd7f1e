import uuid

import httpx
import pytest


@pytest.fixture
def unique():
    """Names no other test uses: `unique("alice")` -> "alice-1f3a9c0d"."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def http(gateway):
    """An HTTP client of the session gateway."""
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as client:
        yield client
