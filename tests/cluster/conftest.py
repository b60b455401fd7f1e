import uuid

import pytest


@pytest.fixture
def unique():
    """Names no other test uses: `unique("alice")` -> "alice-1f3a9c0d"."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"
