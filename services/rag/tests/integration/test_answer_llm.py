"""/v1/answer through an OpenAI-compatible streaming endpoint: a fake one on 127.0.0.1 that
checks what it receives and streams like OpenRouter (comments, chunks, [DONE])."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.service_process import RunningService, running_service_async

from .conftest import User, wait_for_status
from .test_api import create_inline, parse_sse

pytestmark = pytest.mark.integration

API_KEY = "sk-or-test-key"
MODEL = "test/fake-model"


@dataclass
class FakeLLM:
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=lambda: [])
    headers: list[dict[str, str]] = field(default_factory=lambda: [])


@pytest.fixture(scope="module")
async def fake_llm() -> AsyncIterator[FakeLLM]:
    state = FakeLLM()

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        state.requests.append(body)
        state.headers.append(dict(request.headers))
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b": OPENROUTER PROCESSING\n\n")
        user_text = body["messages"][-1]["content"]
        answer = ["Feed it daily ", "with flour and water [1]", ", and [7] is invented."]
        if "Passages:" not in user_text:
            answer = ["no passages"]
        for piece in answer:
            chunk = {"choices": [{"delta": {"content": piece}, "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await asyncio.sleep(0.01)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/api/v1/chat/completions", completions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1"
    yield state
    await runner.cleanup()


@pytest.fixture(scope="module")
async def rag_with_llm(
    rag_env: dict[str, str], fake_llm: FakeLLM, service_log_dir: Path
) -> AsyncIterator[RunningService]:
    env = {**rag_env, "LLM_URL": fake_llm.url, "LLM_MODEL": MODEL, "OPENROUTER_API_KEY": API_KEY}
    async with running_service_async(
        "xtyl_rag", env, log_dir=service_log_dir, name="rag-llm", ready_path="/readyz"
    ) as service:
        yield service


async def test_answer_streams_from_the_llm_with_owned_citations(
    http: aiohttp.ClientSession,
    rag_with_llm: RunningService,
    rag_worker: ManagedProcess,
    fake_llm: FakeLLM,
    make_user: Callable[[], User],
) -> None:
    alice, bob = make_user(), make_user()
    mine = await create_inline(
        http, rag_with_llm, alice, "Starter", "Feed the sourdough starter flour and water daily."
    )
    theirs = await create_inline(
        http, rag_with_llm, bob, "Bob's starter", "Feed the sourdough starter rye every hour."
    )
    for user, doc in ((alice, mine), (bob, theirs)):
        assert (await wait_for_status(http, rag_with_llm.url, user, doc["id"]))["status"] == "ready"

    async with http.post(
        f"{rag_with_llm.url}/v1/answer",
        json={"query": "How do I feed my sourdough starter?"},
        headers=alice.headers,
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        arrivals: list[float] = []
        raw = b""
        async for block in resp.content.iter_any():
            arrivals.append(asyncio.get_running_loop().time())
            raw += block
    events = parse_sse(raw.decode())
    assert [name for name, _ in events] == ["citations", "delta", "delta", "delta", "done"]
    assert len(arrivals) > 1  # streamed, not buffered
    citations = events[0][1]
    assert citations["mode"] == "llm"
    assert [c["document_id"] for c in citations["citations"]] == [mine["id"]]
    done = events[-1][1]
    # [7] names no passage: only [1], alice's chunk, is a citation
    assert done["cited"] == [{"number": 1, "chunk_id": citations["citations"][0]["chunk_id"]}]

    sent = fake_llm.requests[-1]
    assert sent["model"] == MODEL
    assert sent["stream"] is True
    assert sent["messages"][0]["role"] == "system"
    prompt = sent["messages"][-1]["content"]
    assert "flour and water daily" in prompt
    assert "rye" not in prompt  # nothing of bob's reaches the model
    assert "How do I feed my sourdough starter?" in prompt
    assert fake_llm.headers[-1]["Authorization"] == f"Bearer {API_KEY}"
