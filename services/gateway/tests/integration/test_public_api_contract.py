"""The public API document says what the API really answers: schemathesis 4 against the
gateway's merged ``/v1/openapi.json``, with the real gateway, storage, rag and notify processes
over the embedded Postgres, Redis and S3.

Every check runs (status codes, content types, headers, response schemas, unknown fields,
``OPTIONS``/``Allow``, auth, stateful links…) for a fixed time from a fixed seed, as one signed-in
user whose rate limits are raised. ``schemathesis.toml`` beside this file says only what the
document cannot. On failure the assertion shows schemathesis' report: each failure with a
``curl`` line that reproduces it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.service_process import RunningService, running_service_async
from xtyl_devstack.stack import StackInfo
from xtyl_devstack.users import ensure_user

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = Path(__file__).with_name("schemathesis.toml")
#: Fixed, so a run is reproducible; CONTRACT_SEED=<n> explores another part of the space.
SEED = int(os.environ.get("CONTRACT_SEED") or 20261207)
#: schemathesis' own time budget (its phases repeat until it is spent), then its report
RUN_S = 90
UNLIMITED = "1000000"


@pytest.fixture
async def public_api(
    migrated_database_url: str,
    redis_url: str,
    devstack: StackInfo,
    s3_bucket: str,
    auth_env: dict[str, str],
    service_log_dir: Path,
) -> AsyncIterator[RunningService]:
    """The gateway in front of real storage, rag and notify processes (no workers: what they
    do after a request is not part of the contract)."""
    common = {
        **auth_env,
        "DATABASE_URL": migrated_database_url,
        "REDIS_URL": redis_url,
        "EVENTS_STREAM_PREFIX": f"test:contract:{secrets.token_hex(4)}:events",
    }
    storage_env = {
        **common,
        "R2_ENDPOINT": devstack.s3_endpoint,
        "R2_ACCESS_KEY": devstack.s3_access_key,
        "R2_SECRET_KEY": devstack.s3_secret_key,
        "R2_BUCKET": s3_bucket,
        "MAX_UPLOAD_BYTES": str(1024 * 1024),
        "ALLOWED_CONTENT_TYPES": "*/*",
    }
    async with AsyncExitStack() as stack:
        storage, notify = await asyncio.gather(
            stack.enter_async_context(
                running_service_async(
                    "xtyl_storage",
                    storage_env,
                    log_dir=service_log_dir,
                    name="storage-contract",
                    ready_path="/readyz",
                )
            ),
            stack.enter_async_context(
                running_service_async(
                    "xtyl_notify",
                    {
                        **common,
                        "BREVO_API_KEY": "contract-test",
                        "EMAIL_HASH_PEPPER": "test-email-hash-pepper-0123456789abcdef",
                        "PUBLIC_API_URL": "http://127.0.0.1:9",
                        # set, so the webhooks answer their real 401s, not the 404 of "off"
                        "BREVO_WEBHOOK_SECRET": secrets.token_urlsafe(32),
                        "SEND_EMAIL_HOOK_SECRET": "v1,whsec_"
                        + base64.b64encode(secrets.token_bytes(32)).decode(),
                        "APP_URL": "http://localhost:3000",
                    },
                    log_dir=service_log_dir,
                    name="notify-contract",
                    ready_path="/readyz",
                )
            ),
        )
        rag = await stack.enter_async_context(
            running_service_async(
                "xtyl_rag",
                {**common, "STORAGE_URL": storage.url, "EMBEDDING_THREADS": "1"},
                log_dir=service_log_dir,
                name="rag-contract",
                ready_path="/readyz",
                timeout_s=60.0,
            )
        )
        gateway = await stack.enter_async_context(
            running_service_async(
                "xtyl_gateway",
                {
                    **common,
                    "STORAGE_URL": storage.url,
                    "RAG_URL": rag.url,
                    "NOTIFY_URL": notify.url,
                    "RATE_LIMIT_REQUESTS": UNLIMITED,
                    "RATE_LIMIT_ROUTES": f"/v1/answer={UNLIMITED}",
                },
                log_dir=service_log_dir,
                name="gateway-contract",
                ready_path="/readyz",
            )
        )
        yield gateway


@pytest.mark.timeout(RUN_S + 120)
async def test_schemathesis_finds_no_failure_in_the_public_api(
    public_api: RunningService, issuer: LocalIssuer, migrated_database_url: str
) -> None:
    email = f"contract-{secrets.token_hex(4)}@example.com"
    user_id, _ = await ensure_user(migrated_database_url, email, "Contract Test")
    token = issuer.mint(user_id=user_id, email=email)
    started = time.monotonic()
    run = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{public_api.url}/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-time",
        str(RUN_S),
        "--workers",
        "1",  # one user: parallel scenarios would delete each other's files
        "--request-timeout",
        "30",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "NO_COLOR": "1",
            "COLUMNS": "120",
        },
    )
    output, _ = await run.communicate()
    report = output.decode("utf-8", "replace")
    print(f"\nschemathesis ran {time.monotonic() - started:.0f} s:\n{report[-1500:]}")
    assert run.returncode == 0, report[-20000:]
