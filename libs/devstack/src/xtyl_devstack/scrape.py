"""A process's ``/metrics``, read the way Prometheus reads it (prometheus-client's parser): for
the tests of every service and of the whole stack."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


async def scrape(http: aiohttp.ClientSession, base_url: str) -> str:
    async with http.get(base_url + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(
        found.value
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == name and all(found.labels.get(k) == v for k, v in labels.items())
    )


def series(text: str, name: str) -> list[dict[str, str]]:
    """The label sets of the samples ``name``."""
    return [
        dict(found.labels)
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == name
    ]
