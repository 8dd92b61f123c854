"""The app as an MCP server: its JSON endpoints are the tools (the docstrings their descriptions), listed
and called through the streamable-HTTP endpoint on loopback as an assistant would."""

from __future__ import annotations

import ast
import asyncio

import pytest

from recommender import Recommender
from recommender.serve.service import Service
from tests.helpers import serve

TOOLS = {"recommend_image", "recommend_url", "recommend_text", "similar_item", "classify", "browse"}


@pytest.fixture(scope="module")
def mcp_url(text_encoder, real_index, real_embedder):
    service = Service()
    service.set_recommender(Recommender.load(real_index, embedder=real_embedder, text_encoder=text_encoder))
    with serve(service, real_index, mcp=True) as url:
        yield url.rstrip("/") + "/gradio_api/mcp/"


async def session_run(url: str, work):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        return await work(session)


def test_the_endpoints_are_the_tools_and_the_ui_events_are_not(mcp_url):
    tools = asyncio.run(session_run(mcp_url, lambda s: s.list_tools())).tools
    assert {t.name for t in tools} == TOOLS
    described = {t.name: t for t in tools}
    assert "description in words" in described["recommend_text"].description
    assert "text" in described["recommend_text"].inputSchema["properties"]
    assert "text" in described["recommend_image"].inputSchema["properties"]  # the words, the last argument


def test_a_tool_call_answers_like_the_api(mcp_url):
    result = asyncio.run(
        session_run(mcp_url, lambda s: s.call_tool("recommend_text", {"text": "black tee for men", "k": 3}))
    )
    assert not result.isError
    payload = ast.literal_eval(next(c.text for c in result.content if c.type == "text"))  # Gradio sends the repr
    assert payload["understood"] == "gender Men · colour Black · article type Tshirts"
    assert [(r["articleType"], r["baseColour"], r["gender"]) for r in payload["results"]] == [
        ("Tshirts", "Black", "Men")
    ] * 3


def test_a_bad_tool_call_is_one_sentence(mcp_url):
    result = asyncio.run(session_run(mcp_url, lambda s: s.call_tool("similar_item", {"item_id": 1, "k": 3})))
    assert result.isError
    text = " ".join(c.text for c in result.content if c.type == "text")
    assert "No catalog item with id 1" in text and "Traceback" not in text
