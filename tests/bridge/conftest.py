"""What the in-process tests of the HTTP side share."""

import httpx
import pytest

from realtime.asgi import application


@pytest.fixture
async def client():
    """An HTTP client of the whole ASGI application, in process."""
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
