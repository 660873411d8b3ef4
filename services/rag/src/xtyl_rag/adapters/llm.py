"""An OpenAI-compatible chat completions client that streams (OpenRouter by default).

``POST {LLM_URL}/chat/completions`` with ``stream: true`` over the process's shared aiohttp
session; the reply is server-sent events, ``data: {chunk}`` lines ending with ``data: [DONE]``.
OpenRouter interleaves ``: OPENROUTER PROCESSING`` comment lines and may send an ``error``
object mid-stream; both are handled. Not retried: a started answer cannot be replayed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import msgspec
import structlog

from xtyl_common.errors import DependencyError, TimedOut, Unavailable

log = structlog.stdlib.get_logger("xtyl.rag.llm")

_ERROR_CHARS = 300


class LLMFailed(DependencyError):
    default_code = "llm_failed"
    title = "The language model failed"


class _Delta(msgspec.Struct, frozen=True):
    content: str | None = None


class _Choice(msgspec.Struct, frozen=True):
    delta: _Delta = _Delta()
    finish_reason: str | None = None


class _Error(msgspec.Struct, frozen=True):
    message: str = "unknown error"
    code: Any = None


class _StreamChunk(msgspec.Struct, frozen=True):
    choices: list[_Choice] = msgspec.field(default_factory=list)
    error: _Error | None = None


_chunk_decoder = msgspec.json.Decoder(_StreamChunk)
_encoder = msgspec.json.Encoder()


class ChatClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout_s: float = 60.0,
        max_tokens: int = 800,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._max_tokens = max_tokens
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",
            "X-Title": "xtyl",
        }
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        # no total: an answer streams for as long as it has tokens; silence is what times out
        self._timeout = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=timeout_s)

    async def stream(self, messages: Sequence[dict[str, str]]) -> AsyncIterator[str]:
        """The answer's text, piece by piece."""
        body = _encoder.encode(
            {
                "model": self.model,
                "messages": list(messages),
                "stream": True,
                "max_tokens": self._max_tokens,
                "temperature": 0.2,
            }
        )
        try:
            async with self._session.post(
                self._url, data=body, headers=self._headers, timeout=self._timeout
            ) as resp:
                if resp.status != 200:
                    text = (await resp.read()).decode("utf-8", "replace").strip()
                    raise LLMFailed(
                        f"the model endpoint answered {resp.status}: {text[:_ERROR_CHARS]}",
                        code="llm_rejected" if resp.status < 500 else "llm_unavailable",
                        extra={"upstream_status": resp.status},
                    )
                async for piece in _pieces(resp):
                    yield piece
        except TimeoutError as exc:
            raise TimedOut("the model endpoint went silent", code="llm_timeout") from exc
        except aiohttp.ClientError as exc:
            raise Unavailable(
                f"the model endpoint failed: {type(exc).__name__}", code="llm_unavailable"
            ) from exc


async def _pieces(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    buffer = b""
    async for block in resp.content.iter_any():
        buffer += block
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r")
            if not line.startswith(b"data:"):
                continue  # blank separators, ": comments", event:/id: fields
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            try:
                chunk = _chunk_decoder.decode(data)
            except msgspec.DecodeError:
                log.warning("llm_bad_chunk", excerpt=data[:100].decode("utf-8", "replace"))
                continue
            if chunk.error is not None:
                raise LLMFailed(f"the model failed mid-answer: {chunk.error.message}")
            for choice in chunk.choices:
                if choice.delta.content:
                    yield choice.delta.content
