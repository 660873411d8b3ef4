"""The OpenAPI documents of the services behind the gateway, fetched from each one's
``/schema/openapi.json`` (with a timeout). A service that is down or answers something else
is left out."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import msgspec

from xtyl_gateway.domain.openapi import JsonObject

_FETCH_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


class ServiceDocuments:
    def __init__(self, session: aiohttp.ClientSession, upstreams: Mapping[str, str]) -> None:
        self._session = session
        self._upstreams = dict(upstreams)

    @property
    def names(self) -> list[str]:
        return list(self._upstreams)

    async def fetch_all(self) -> dict[str, JsonObject]:
        """Each service's document, by service name; the ones that could not be read left out."""
        names = self.names
        fetched = await asyncio.gather(*(self._fetch(self._upstreams[n]) for n in names))
        return {n: doc for n, doc in zip(names, fetched, strict=True) if doc is not None}

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
