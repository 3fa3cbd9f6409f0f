"""MCP drift checks when Redis is down: a target that blocks changed tools refuses
``tools/list`` and ``tools/call`` (fail closed); a flagging target passes them."""

from __future__ import annotations

import pytest
from mcp.shared.exceptions import McpError

from tests.proxy_worker.mcp.harness import FLAGGING, SLUGS

pytestmark = pytest.mark.reliability


async def test_a_blocking_target_fails_closed_and_a_flagging_one_goes_on(gw):
    async with gw.session() as blocking, gw.session(SLUGS[FLAGGING]) as flagging:
        await blocking.list_tools()
        await flagging.list_tools()
        gw.redis.stop()
        try:
            with pytest.raises(McpError) as e:
                await blocking.list_tools()
            assert e.value.error.data["code"] == "drift_unavailable"
            with pytest.raises(McpError) as e:
                await blocking.call_tool("weather", {"city": "Oslo"})
            assert e.value.error.data["code"] == "drift_unavailable"
            assert "weather" in [t.name for t in (await flagging.list_tools()).tools]
            ok = await flagging.call_tool("weather", {"city": "Oslo"})
            assert ok.content[0].text == "sunny in Oslo"
        finally:
            gw.redis.start()
        # Back up: the session goes on.
        assert "weather" in [t.name for t in (await blocking.list_tools()).tools]
