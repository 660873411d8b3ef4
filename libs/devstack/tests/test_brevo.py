"""The local Brevo stand-in: strict about what it accepts, answers like Brevo, keeps what it
received, plays failures on demand, and runs as ``python -m xtyl_devstack.brevo``."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from xtyl_devstack.brevo import LocalBrevo
from xtyl_devstack.ports import free_port

KEY = "xkeysib-test"


@pytest.fixture
async def brevo(tmp_path: Path) -> AsyncIterator[LocalBrevo]:
    async with LocalBrevo(tmp_path / "brevo", api_key=KEY) as stand_in:
        yield stand_in


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
        yield client


def valid_email(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sender": {"name": "xtyl", "email": "no-reply@xtyl.app"},
        "to": [{"email": "ada@example.com", "name": "Ada"}],
        "subject": "Welcome",
        "htmlContent": "<p>Hi</p>",
        "textContent": "Hi",
        "tags": ["welcome"],
        "headers": {"idempotencyKey": "0b6b7c9e-8f3e-4b53-9c1a-6f0e0e6c1f00"},
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


async def send(
    session: aiohttp.ClientSession, brevo: LocalBrevo, body: Any, *, key: str | None = KEY
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"api-key": key} if key is not None else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(
        f"{brevo.url}/v3/smtp/email",
        data=data,
        headers={**headers, "Content-Type": "application/json"},
    ) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def test_accepts_a_valid_send_and_keeps_it(
    brevo: LocalBrevo, session: aiohttp.ClientSession
) -> None:
    status, body, _ = await send(session, brevo, valid_email())
    assert status == 201
    assert re.fullmatch(r"<\d+\.[0-9a-f]{16}@smtp-relay\.mailin\.fr>", body["messageId"])
    [kept] = brevo.emails_to("ADA@example.com")
    assert kept["messageId"] == body["messageId"]
    assert kept["subject"] == "Welcome"

    async with session.get(f"{brevo.url}/_local/emails", params={"to": "ada@example.com"}) as resp:
        listed = await resp.json()
    assert listed["count"] == 1
    assert listed["emails"][0]["messageId"] == body["messageId"]
    lines = (await asyncio.to_thread(brevo.emails_file.read_text)).splitlines()
    assert [json.loads(line)["messageId"] for line in lines] == [body["messageId"]]


@pytest.mark.parametrize(
    ("key", "status", "code"), [(None, 401, "unauthorized"), ("wrong", 401, "unauthorized")]
)
async def test_checks_the_api_key(
    brevo: LocalBrevo, session: aiohttp.ClientSession, key: str | None, status: int, code: str
) -> None:
    answer, body, _ = await send(session, brevo, valid_email(), key=key)
    assert (answer, body["code"]) == (status, code)
    assert brevo.emails == []


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"{not json", "bad_request", "valid JSON"),
        ([1, 2], "bad_request", "JSON object"),
        (valid_email(sender=None), "missing_parameter", "sender"),
        (valid_email(sender={"email": "nope"}), "invalid_parameter", "sender"),
        (valid_email(to=None), "missing_parameter", "to"),
        (valid_email(to=[]), "invalid_parameter", "to"),
        (valid_email(to=[{"email": "not-an-address"}]), "invalid_parameter", "email"),
        (valid_email(to=[{"email": "a@example.com", "name": 3}]), "invalid_parameter", "name"),
        (valid_email(subject=None), "missing_parameter", "subject"),
        (valid_email(htmlContent=None, textContent=None), "missing_parameter", "Content"),
        (valid_email(tags="welcome"), "invalid_parameter", "tags"),
        (valid_email(headers={"idempotencyKey": 1}), "invalid_parameter", "headers"),
        (valid_email(html_content="<p>typo</p>"), "invalid_parameter", "html_content"),
        (valid_email(templateId="3"), "invalid_parameter", "templateId"),
        (valid_email(templateId=0), "invalid_parameter", "templateId"),
        (valid_email(templateId=3, params=["a"]), "invalid_parameter", "params"),
    ],
)
async def test_refuses_what_brevo_would_refuse(
    brevo: LocalBrevo, session: aiohttp.ClientSession, body: Any, code: str, message: str
) -> None:
    status, answer, _ = await send(session, brevo, body)
    assert status == 400
    assert answer["code"] == code
    assert message in answer["message"]
    assert brevo.emails == []


async def test_a_template_send_is_kept_with_its_params(
    brevo: LocalBrevo, session: aiohttp.ClientSession
) -> None:
    body = valid_email(
        subject=None, htmlContent=None, textContent=None, templateId=7, params={"token": "123"}
    )
    status, _, _ = await send(session, brevo, body)
    assert status == 201
    [kept] = brevo.emails
    assert (kept["templateId"], kept["params"]) == (7, {"token": "123"})


async def test_same_idempotency_key_sends_once(
    brevo: LocalBrevo, session: aiohttp.ClientSession
) -> None:
    _, first, _ = await send(session, brevo, valid_email())
    status, again, _ = await send(session, brevo, valid_email())
    assert status == 201
    assert again == first
    assert len(brevo.emails) == 1
    await send(session, brevo, valid_email(headers={"idempotencyKey": "another"}))
    assert len(brevo.emails) == 2


async def test_plays_programmed_failures_for_one_address(
    brevo: LocalBrevo, session: aiohttp.ClientSession
) -> None:
    async with session.post(
        f"{brevo.url}/_local/failures",
        json={"status": 429, "times": 2, "to": "ada@example.com"},
    ) as resp:
        assert resp.status == 204
    other = valid_email(to=[{"email": "bob@example.com"}], headers={})
    assert (await send(session, brevo, other))[0] == 201

    status, body, headers = await send(session, brevo, valid_email())
    assert (status, body["code"]) == (429, "too_many_requests")
    assert headers["x-sib-ratelimit-remaining"] == "0"
    assert headers["x-sib-ratelimit-reset"] == "1"
    assert (await send(session, brevo, valid_email()))[0] == 429
    assert (await send(session, brevo, valid_email()))[0] == 201
    assert brevo.requests_to("ada@example.com") == [429, 429, 201]

    brevo.fail_next(400, code="invalid_parameter")
    status, body, _ = await send(session, brevo, valid_email(headers={}))
    assert (status, body["code"]) == (400, "invalid_parameter")


async def test_runs_as_a_process_until_sigterm(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xtyl_devstack.brevo",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        banner = await asyncio.wait_for(process.stdout.readline(), timeout=20)
        assert f"http://127.0.0.1:{port}/v3/smtp/email" in banner.decode()
        async with session.post(
            f"http://127.0.0.1:{port}/v3/smtp/email", json=valid_email(), headers={"api-key": "any"}
        ) as resp:
            assert resp.status == 201
        async with session.get(f"http://127.0.0.1:{port}/_local/emails") as resp:
            assert (await resp.json())["count"] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    lines = (tmp_path / "data" / "emails.jsonl").read_text().splitlines()
    assert len(lines) == 1


async def test_deleting_an_address_s_log_forgets_its_emails_here_and_in_the_file(
    brevo: LocalBrevo, session: aiohttp.ClientSession
) -> None:
    for i, address in enumerate(["ada@example.com", "Ada@Example.com", "bob@example.com"]):
        key = f"0b6b7c9e-8f3e-4b53-9c1a-6f0e0e6c1f0{i}"
        status, _, _ = await send(
            session, brevo, valid_email(to=[{"email": address}], headers={"idempotencyKey": key})
        )
        assert status == 201
    [bob] = brevo.emails_to("bob@example.com")

    async def delete(identifier: str, *, key: str | None = KEY) -> int:
        headers = {"api-key": key} if key is not None else {}
        async with session.delete(f"{brevo.url}/v3/smtp/log/{identifier}", headers=headers) as resp:
            return resp.status

    assert await delete("ada%40example.com", key=None) == 401
    assert await delete("not-an-address") == 400
    assert len(brevo.emails) == 3  # refused: nothing forgotten
    assert await delete("ADA%40example.com") == 204
    assert brevo.emails_to("ada@example.com") == []
    assert brevo.emails == [bob]
    lines = (await asyncio.to_thread(brevo.emails_file.read_text)).splitlines()
    assert [json.loads(line)["messageId"] for line in lines] == [bob["messageId"]]
    assert await delete("ada%40example.com") == 204  # again: nothing left, still 204
    brevo.fail_next_log_deletion(503)
    assert await delete(bob["messageId"].replace("@", "%40")) == 503
    assert brevo.emails == [bob]
    assert await delete(bob["messageId"].replace("@", "%40")) == 204  # by its message id
    assert brevo.emails == []
    assert brevo.deleted_logs() == [
        "ada@example.com",
        "ada@example.com",
        bob["messageId"],
    ]
