import pytest

from bridge.backends import reset_backends
from tests.servers import start_gateway


@pytest.fixture(autouse=True)
def _fresh_backends():
    """Every test starts with an empty embedded backend."""
    reset_backends()
    yield
    reset_backends()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    """One real Daphne gateway on the embedded default, for the whole session."""
    server = start_gateway(tmp_path_factory.mktemp("gateway"))
    yield server
    server.stop()
