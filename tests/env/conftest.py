"""Fixtures shared by the env tests."""

import pytest

from tools_server.inprocess import InProcessToolClient


@pytest.fixture(scope="session")
def client():
    """The real tool service in this process (no HTTP), shared by the env tests; a module
    that needs another client (a fake) defines its own `client` fixture."""
    c = InProcessToolClient()
    yield c
    c.close()
