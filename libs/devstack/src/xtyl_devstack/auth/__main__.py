"""``python -m xtyl_devstack.auth``: serve the local Supabase Auth until SIGTERM.

    python -m xtyl_devstack.auth --key-dir .data/auth --port 8010 \
        --config supabase/config.toml --site-url http://localhost:3000 \
        --hook-uri http://127.0.0.1:8000/webhooks/auth/send-email

``DATABASE_URL`` (the embedded Postgres, migrated), ``SUPABASE_JWT_SECRET`` (the project's
secret: API keys are HS256 JWTs signed with it) and, when the config turns the Send Email Hook
on, ``SEND_EMAIL_HOOK_SECRET`` (``v1,whsec_…``) come from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from xtyl_devstack.auth.config import load_config
from xtyl_devstack.auth.server import LocalAuth
from xtyl_devstack.errors import DevstackError
from xtyl_devstack.loopback import serve_until_signal


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise DevstackError(f"{name} is required")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xtyl_devstack.auth")
    parser.add_argument("--key-dir", type=Path, required=True, help="the ES256 signing key")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", type=Path, required=True, help="supabase/config.toml")
    parser.add_argument("--site-url", required=True, help="the local frontend")
    parser.add_argument("--hook-uri", default=None, help="where the Send Email Hook goes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        config = load_config(args.config).for_local(
            site_url=args.site_url,
            hook_uri=args.hook_uri,
            hook_secret=os.environ.get("SEND_EMAIL_HOOK_SECRET") or None,
        )
        auth = LocalAuth(
            args.key_dir,
            database_url=_required("DATABASE_URL"),
            config=config,
            jwt_secret=_required("SUPABASE_JWT_SECRET"),
            port=args.port,
        )
    except DevstackError as exc:
        print(f"auth: {exc}", file=sys.stderr)
        return 2
    asyncio.run(
        serve_until_signal(
            auth, lambda: f"local Supabase Auth at {auth.api_url} (config {args.config})"
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
