import pytest

from accounts import failures
from bridge.api import throttles
from bridge.backends import reset_backends
from tests.servers import start_gateway


@pytest.fixture(autouse=True)
def _fresh_backends():
    """Every test starts with an empty embedded backend, and no failed
    authentications or API requests on record (every in-process client is
    127.0.0.1)."""
    reset_backends()
    failures.clear()
    throttles.clear()
    yield
    reset_backends()
    failures.clear()
    throttles.clear()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    """One real Daphne gateway on the embedded default, for the whole session."""
    server = start_gateway(tmp_path_factory.mktemp("gateway"))
    yield server
    server.stop()
