"""The Send Email Hook as Supabase Auth calls it (supabase/auth ``internal/hooks/hookshttp``).

One POST of the JSON payload to the hook's URI, signed per Standard Webhooks with each secret
(``standardwebhooks``: ``webhook-id`` a fresh UUID per attempt, ``webhook-timestamp`` in
seconds, ``webhook-signature`` the ``v1,<base64>`` signatures joined by ``", "``). Up to three
attempts within 5 s: a connection error waits 2 s and tries again; a 429 or 503 that carries
``Retry-After`` is tried again at once. Outcomes as Supabase Auth maps them:

* 204, or 200/202 with a JSON body and no ``error``: sent;
* 200/202 with ``{"error": {"http_code": N, "message": M}}``: that error (status N, 500 when
  none);
* 200/202 without ``application/json``: 400 ``hook_payload_invalid_content_type``;
* 400, 401, another status, or 429/503 without ``Retry-After``: 500;
* no answer in 5 s: 422 ``hook_timeout``; unreachable three times: 422
  ``hook_timeout_after_retry``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
from standardwebhooks import Webhook

from xtyl_devstack.auth.config import SendEmailHook
from xtyl_devstack.auth.errors import AuthApiError

HOOK_TIMEOUT_S = 5.0
HOOK_ATTEMPTS = 3
HOOK_BACKOFF_S = 2.0
RESPONSE_LIMIT = 200 * 1024


def sign(secrets: tuple[str, ...], msg_id: str, at: datetime, body: bytes) -> str:
    """The ``webhook-signature`` header: one signature per secret (``v1,whsec_…``)."""
    return ", ".join(
        Webhook(secret.removeprefix("v1,")).sign(msg_id, at, body) for secret in secrets
    )


async def call_send_email_hook(
    session: aiohttp.ClientSession,
    hook: SendEmailHook,
    payload: dict[str, Any],
    *,
    timeout_s: float = HOOK_TIMEOUT_S,
) -> None:
    """POST ``payload``; return when the hook accepted it, else raise :class:`AuthApiError`."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    deadline = time.monotonic() + timeout_s
    for attempt in range(HOOK_ATTEMPTS):
        msg_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": sign(hook.secrets, msg_id, now, body),
            "Accept-Encoding": "identity",
        }
        remaining = deadline - time.monotonic()
        try:
            async with session.post(
                hook.uri,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=max(remaining, 0.001)),
            ) as response:
                status = response.status
                content_type = response.content_type
                retry_after = response.headers.get("Retry-After", "")
                answer = await response.content.read(RESPONSE_LIMIT + 1)
        except TimeoutError:
            raise _timeout(timeout_s) from None
        except aiohttp.ClientError:
            if attempt == HOOK_ATTEMPTS - 1:
                raise AuthApiError(
                    422, "hook_timeout_after_retry", "Failed to reach hook after maximum retries"
                ) from None
            if deadline - time.monotonic() <= HOOK_BACKOFF_S:
                raise _timeout(timeout_s) from None
            await asyncio.sleep(HOOK_BACKOFF_S)
            continue
        if status == 204:
            return
        if status in (200, 202):
            _check_answer(content_type, answer)
            return
        if status in (429, 503) and retry_after:
            continue
        raise AuthApiError(500, "", _failure_message(status))
    raise AuthApiError(500, "", "Service currently unavailable due to hook")


def _timeout(timeout_s: float) -> AuthApiError:
    return AuthApiError(
        422,
        "hook_timeout",
        f"Failed to reach hook within maximum time of {timeout_s:f} seconds",
    )


def _failure_message(status: int) -> str:
    return {
        400: "Invalid payload sent to hook",
        401: "Hook requires authorization token",
        429: "Service currently unavailable due to hook",
        503: "Service currently unavailable due to hook",
    }.get(status, f"Unexpected status code returned from hook: {status}")


def _check_answer(content_type: str, answer: bytes) -> None:
    if content_type != "application/json":
        raise AuthApiError(
            400,
            "hook_payload_invalid_content_type",
            f"Invalid JSON response. Received content-type: {content_type}",
        )
    if len(answer) > RESPONSE_LIMIT:
        raise AuthApiError(
            422,
            "hook_payload_over_size_limit",
            f"Payload size exceeded size limit of {RESPONSE_LIMIT} bytes",
        )
    try:
        decoded: object = json.loads(answer)
    except ValueError:
        raise AuthApiError(500, "", "Error unmarshaling JSON output.") from None
    if not isinstance(decoded, dict):
        return
    error: object = decoded.get("error")  # pyright: ignore[reportUnknownMemberType]
    if isinstance(error, dict) and error.get("message"):  # pyright: ignore[reportUnknownMemberType]
        code: object = error.get("http_code")  # pyright: ignore[reportUnknownMemberType]
        status = code if isinstance(code, int) and code else 500
        raise AuthApiError(status, "", str(error["message"]))  # pyright: ignore[reportUnknownArgumentType]
