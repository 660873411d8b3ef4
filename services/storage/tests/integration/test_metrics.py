"""What an operator reads on storage's /metrics: the file bytes uploaded through the API and
streamed out by downloads, the multipart parts sent to the bucket, requests counted under
``service="storage"`` by route template. A presigned direct upload passes by the service."""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import pytest

from xtyl_devstack.scrape import sample

from .asgi import AsgiClient
from .conftest import MIB, User, service_headers
from .test_uploads import FORM_TYPE, streamed_form

pytestmark = pytest.mark.integration

RECEIVED = "xtyl_storage_bytes_received_total"
SENT = "xtyl_storage_bytes_sent_total"
PARTS = "xtyl_storage_multipart_parts_total"


class Metrics:
    """The in-process app's /metrics before and after, as Prometheus would read them."""

    def __init__(self, client: AsgiClient) -> None:
        self.client = client
        self.before = ""

    async def read(self) -> str:
        resp = await self.client.get("/metrics")
        assert resp.status_code == 200
        return resp.text

    async def start(self) -> None:
        self.before = await self.read()

    async def moved(self, name: str, **labels: str) -> float:
        return sample(await self.read(), name, **labels) - sample(self.before, name, **labels)


async def upload(client: AsgiClient, user: User, data: bytes) -> dict[str, Any]:
    resp = await client.post(
        "/v1/files",
        params={"filename": "notes.bin"},
        headers={**user.headers, "Content-Type": "application/octet-stream"},
        content=data,
    )
    assert resp.status_code == 201, resp.text
    file: dict[str, Any] = resp.json()
    return file


async def test_bytes_in_and_out_and_multipart_parts(client: AsgiClient, alice: User) -> None:
    metrics = Metrics(client)
    await metrics.start()
    small = os.urandom(300_000)  # one PUT
    file = await upload(client, alice, small)
    assert await metrics.moved(RECEIVED) == len(small)
    assert await metrics.moved(PARTS) == 0

    big = 7 * MIB  # a form upload in 5 MiB parts: two parts; the form's own bytes not counted
    resp = await client.post(
        "/v1/files",
        headers={**alice.headers, "Content-Type": FORM_TYPE},
        content=streamed_form(big),
    )
    assert resp.status_code == 201, resp.text
    assert await metrics.moved(RECEIVED) == len(small) + big
    assert await metrics.moved(PARTS) == 2
    assert await metrics.moved(SENT) == 0

    download = await client.get(f"/v1/files/{file['id']}/content", headers=alice.headers)
    assert download.content == small
    assert await metrics.moved(SENT) == len(small)
    internal = await client.get(
        f"/internal/files/{resp.json()['id']}/content", headers=service_headers(user_id=alice.id)
    )
    assert len(internal.content) == big
    assert await metrics.moved(SENT) == len(small) + big

    route = {"service": "storage", "route": "/v1/files/{file_id}/content", "status": "200"}
    assert await metrics.moved("xtyl_http_requests_total", **route) == 1


async def test_a_presigned_upload_passes_by_the_service(
    client: AsgiClient, alice: User, http: aiohttp.ClientSession
) -> None:
    data = b"%PDF-1.7 " + b"z" * 50_000
    metrics = Metrics(client)
    await metrics.start()
    started = await client.post(
        "/v1/files/uploads",
        headers=alice.headers,
        json_body={"name": "direct.pdf", "content_type": "application/pdf", "size": len(data)},
    )
    assert started.status_code == 201, started.text
    body = started.json()
    async with http.put(body["url"], data=data, headers=body["headers"]) as put:
        assert put.status == 200
    done = await client.post(body["complete_url"], headers=alice.headers)
    assert done.status_code == 200, done.text

    # completing reads the object back to hash it: neither received nor sent
    assert (await metrics.moved(RECEIVED), await metrics.moved(SENT)) == (0, 0)
