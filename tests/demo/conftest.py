"""Fixtures of the demo upstream tests: the LLM upstream in a thread and SDK clients for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from demo import llm_upstream

API_KEY = "sk-test-gatehouse"


@pytest.fixture
def llm_server() -> Iterator[llm_upstream.LLMUpstreamServer]:
    """The LLM upstream on a free port, in a thread."""
    server = llm_upstream.make_server("127.0.0.1", 0, API_KEY)
    llm_upstream.start_in_thread(server)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def llm_client(llm_server: llm_upstream.LLMUpstreamServer) -> Iterator[openai.OpenAI]:
    """A real OpenAI SDK client pointed at the upstream."""
    client = openai.OpenAI(
        base_url=llm_server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=10
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def llm_async_client(
    llm_server: llm_upstream.LLMUpstreamServer,
) -> AsyncIterator[openai.AsyncOpenAI]:
    """The async OpenAI SDK client the Agents SDK uses, pointed at the upstream."""
    client = openai.AsyncOpenAI(
        base_url=llm_server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=10
    )
    try:
        yield client
    finally:
        await client.close()
