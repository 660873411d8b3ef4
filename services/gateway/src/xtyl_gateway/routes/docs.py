"""``GET /v1/openapi.json`` and ``GET /docs``: the whole public API in one document.

The services own their routes' schemas; the gateway fetches each one's OpenAPI document
(``/schema/openapi.json``, with a timeout), keeps the paths it routes publicly, and caches the
result for a minute. A service that is down is left out and named in ``x-xtyl-missing``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import msgspec
from litestar import Request, Response, get
from litestar.response import Response as LitestarResponse

from xtyl_gateway.domain.openapi import JsonObject, merge_public_api

_CACHE_TTL_S = 60.0
_FETCH_TIMEOUT = aiohttp.ClientTimeout(total=2.0)

SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xtyl API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/v1/openapi.json", dom_id: "#ui"});</script>
</body></html>"""


class PublicApiDocs:
    def __init__(self, session: aiohttp.ClientSession, upstreams: dict[str, str]) -> None:
        self._session = session
        self._upstreams = upstreams
        self._cached: tuple[float, bytes] | None = None
        self._lock = asyncio.Lock()

    async def document(self, own: JsonObject) -> bytes:
        async with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < _CACHE_TTL_S:
                return self._cached[1]
            names = list(self._upstreams)
            fetched = await asyncio.gather(*(self._fetch(self._upstreams[n]) for n in names))
            services = {n: doc for n, doc in zip(names, fetched, strict=True) if doc is not None}
            merged = merge_public_api(own, services)
            missing = sorted(set(names) - set(services))
            if missing:
                merged["x-xtyl-missing"] = missing
            body = msgspec.json.encode(merged)
            # a partial document counts as already old: it is refetched within 5 s
            fetched_at = time.monotonic() - (_CACHE_TTL_S - 5 if missing else 0)
            self._cached = (fetched_at, body)
            return body

    async def _fetch(self, base_url: str) -> JsonObject | None:
        try:
            async with self._session.get(
                base_url.rstrip("/") + "/schema/openapi.json", timeout=_FETCH_TIMEOUT
            ) as resp:
                if resp.status != 200:
                    return None
                doc: Any = msgspec.json.decode(await resp.read())
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError):
            return None
        return doc if isinstance(doc, dict) else None


@get("/v1/openapi.json", include_in_schema=False)
async def public_openapi(request: Request[Any, Any, Any]) -> Response[bytes]:
    docs: PublicApiDocs = request.app.state.public_docs
    own: JsonObject = request.app.openapi_schema.to_schema()
    return Response(await docs.document(own), media_type="application/json")


@get("/docs", include_in_schema=False, sync_to_thread=False)
def docs_page() -> LitestarResponse[str]:
    return LitestarResponse(SWAGGER_PAGE, media_type="text/html")
