"""Fixtures starting the real parts of the MCP path (see harness.py)."""

from __future__ import annotations

import pytest

from tests.proxy_worker.mcp.harness import McpGateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    """FastMCP upstreams, a private Redis and a proxy worker, shared by a module; the
    policy is reset and the records cleared before each test (:func:`fresh`)."""
    g = McpGateway(tmp_path_factory.mktemp("mcp"))
    try:
        g.start()
    except Exception:
        g.stop()
        raise
    yield g
    g.stop()


@pytest.fixture
def fresh(gw, request):
    """``gw`` with the default policy (no access rule) and nothing recorded yet."""
    gw.policy()
    gw.clear()
    yield gw
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(gw.log()[-4000:])


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
