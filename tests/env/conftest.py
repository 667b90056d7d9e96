"""Fixtures shared by the env tests."""

import pytest

from tools_server.inprocess import InProcessToolClient


@pytest.fixture(scope="session")
def client():
    """The real tool service in this process (no HTTP), shared by the env tests; a module
    that needs another client (a fake) defines its own `client` fixture."""
    # The sympy tools stop after 2 s of wall-clock time; on 2 busy cores (the suite beside
    # other jobs) a geometry solve can pass that (a `timeout` observation: right for a
    # server, noise for these tests). 10 s here.
    c = InProcessToolClient(tool_options={name: {"time_limit_s": 10.0} for name in (
        "calculator", "solve_equation", "simplify", "geometry_solver")})
    yield c
    c.close()
