"""An embedder on any OpenAI-compatible ``POST {base}/embeddings`` (OpenRouter, OpenAI, a local
server), over the process's shared aiohttp session.

Batches of ``max_batch`` texts, one request each, in order. Embedding is a pure function of its
input, so a request is safe to repeat: 429, 5xx, timeouts and refused connections are retried
here, through the endpoint's :class:`~xtyl_common.retry.RetryPolicy` (``EMBEDDING_RETRIES``,
``EMBEDDING_BACKOFF_*``: the only retry layer of a request). A ``Retry-After`` sets the wait; one
longer than the policy sleeps goes up at once as ``embedding_rate_limited`` with
``retry_after_s``, for the caller's job to wait instead. Every response is decoded with msgspec
and checked: one vector per input, each of the configured dimension; vectors are re-normalised
(not every server returns unit vectors).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime

import aiohttp
import msgspec
import numpy as np
import structlog

from xtyl_common.errors import DependencyError, TimedOut, Unavailable
from xtyl_rag.adapters.embedders.config import EmbeddingEndpoint
from xtyl_rag.adapters.embedders.protocol import Vectors, empty_vectors, l2_normalise

log = structlog.stdlib.get_logger("xtyl.rag.embedder")

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524})
_ERROR_BODY_CHARS = 300


class EmbeddingItem(msgspec.Struct, frozen=True):
    embedding: list[float]
    index: int


class EmbeddingsResponse(msgspec.Struct, frozen=True):
    data: list[EmbeddingItem]


class EmbeddingsRequest(msgspec.Struct, frozen=True):
    model: str
    input: list[str]
    encoding_format: str = "float"


_decoder = msgspec.json.Decoder(EmbeddingsResponse)
_encoder = msgspec.json.Encoder()


class EmbeddingFailed(DependencyError):
    """The endpoint answered, but not with what we asked for (bad key, unknown model, a
    response of the wrong shape or dimension). Retrying does not help."""

    default_code = "embedding_failed"
    title = "The embeddings endpoint failed"


class EmbeddingUnavailable(Unavailable):
    """The endpoint could not be reached or answered 408/409/425/429/5xx: worth another try,
    after ``retry_after_s`` when it said (``Retry-After``)."""

    default_code = "embedding_unavailable"


#: What a retry of an embeddings request may cure (a refusal or a bad answer is not retried).
PASSING_FAILURES = (EmbeddingUnavailable, TimedOut)


class OpenAIEmbedder:
    def __init__(
        self,
        endpoint: EmbeddingEndpoint,
        session: aiohttp.ClientSession,
        *,
        model_id: str,
        dimension: int,
        max_batch: int,
    ) -> None:
        self._endpoint = endpoint
        self._session = session
        self._model_id = model_id
        self._dimension = dimension
        self._max_batch = max_batch
        self._url = endpoint.url.rstrip("/") + "/embeddings"
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            # the shared session does not decompress (auto_decompress=False)
            "Accept-Encoding": "identity",
        }
        if endpoint.api_key:
            self._headers["Authorization"] = f"Bearer {endpoint.api_key}"
        self._timeout = aiohttp.ClientTimeout(
            total=endpoint.timeout_s, connect=endpoint.connect_timeout_s
        )

    @property
    def model(self) -> str:
        return f"openai:{self._model_id}"

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_batch(self) -> int:
        return self._max_batch

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return empty_vectors(self.dimension)
        parts = [
            await self._embed_batch(list(texts[start : start + self.max_batch]))
            for start in range(0, len(texts), self.max_batch)
        ]
        return np.concatenate(parts, axis=0)

    async def aclose(self) -> None:
        """The session belongs to the process, not to the embedder: nothing to close."""

    async def _embed_batch(self, texts: list[str]) -> Vectors:
        body = _encoder.encode(EmbeddingsRequest(model=self._model_id, input=texts))
        payload = await self._endpoint.retry.call(PASSING_FAILURES, self._post, body, len(texts))
        return self._vectors(payload, len(texts))

    async def _post(self, body: bytes, count: int) -> bytes:
        """One request: the response body of a 200, else the error that says what failed."""
        started = time.perf_counter()
        try:
            async with self._session.post(
                self._url, data=body, headers=self._headers, timeout=self._timeout
            ) as resp:
                payload = await resp.read()
                status, headers = resp.status, resp.headers
        except TimeoutError as exc:
            raise TimedOut("embeddings endpoint timed out", code="embedding_timeout") from exc
        except aiohttp.ClientError as exc:
            raise EmbeddingUnavailable(
                f"embeddings endpoint unreachable: {type(exc).__name__}"
            ) from exc
        if status == 200:
            log.debug(
                "embeddings_received", count=count, ms=round((time.perf_counter() - started) * 1000)
            )
            return payload
        if status not in RETRY_STATUSES:
            raise EmbeddingFailed(
                f"embeddings endpoint answered {status}: {_excerpt(payload)}",
                code="embedding_rejected",
                extra={"upstream_status": status},
            )
        wait = retry_after_s(headers)
        extra: dict[str, int] = {"upstream_status": status}
        if wait is not None:
            extra["retry_after"] = round(wait)
        raise EmbeddingUnavailable(
            f"embeddings endpoint answered {status}"
            + (f" and asks to wait {wait:.1f} s" if wait is not None else ""),
            code="embedding_rate_limited" if status == 429 else "embedding_unavailable",
            extra=extra,
            retry_after_s=wait,
        )

    def _vectors(self, payload: bytes, expected: int) -> Vectors:
        try:
            response = _decoder.decode(payload)
        except msgspec.DecodeError as exc:
            raise EmbeddingFailed(
                f"embeddings endpoint sent an invalid response: {exc}",
                code="embedding_invalid_response",
            ) from None
        items = sorted(response.data, key=lambda item: item.index)
        if len(items) != expected or [item.index for item in items] != list(range(expected)):
            raise EmbeddingFailed(
                f"embeddings endpoint returned {len(items)} vectors for {expected} inputs",
                code="embedding_invalid_response",
            )
        dimensions = {len(item.embedding) for item in items}
        if dimensions != {self.dimension}:
            got = ", ".join(str(d) for d in sorted(dimensions))
            raise EmbeddingFailed(
                f"model {self._model_id} returned vectors of dimension {got}, but "
                f"EMBEDDING_DIMENSION is {self.dimension}: set it to the model's dimension "
                "(and re-embed existing documents)",
                code="embedding_dimension_mismatch",
            )
        matrix = np.asarray([item.embedding for item in items], dtype=np.float32)
        if not np.isfinite(matrix).all():
            raise EmbeddingFailed(
                "embeddings endpoint returned non-finite numbers",
                code="embedding_invalid_response",
            )
        return l2_normalise(matrix)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or ``None``."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _excerpt(payload: bytes) -> str:
    text = payload.decode("utf-8", "replace").strip()
    return text[:_ERROR_BODY_CHARS] + ("…" if len(text) > _ERROR_BODY_CHARS else "")
