"""``python -m xtyl_devstack up|env|user``: run the local backend, print its environment,
create a local user with a token."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from xtyl_devstack.errors import DevstackError
from xtyl_devstack.up import DEFAULT_DATA_DIR, default_services, env_lines, run_up
from xtyl_devstack.users import create_user


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xtyl_devstack",
        description="The xtyl backend on this machine: PostgreSQL+pgvector, Redis, S3, services.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start everything and wait (Ctrl-C stops it all)")
    up.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: .data")
    up.add_argument("--no-services", action="store_true", help="only the servers")
    up.add_argument("--no-migrate", action="store_true", help="do not apply the migrations")
    env = commands.add_parser("env", help="print export lines for the running `up` stack")
    env.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: .data")
    env.add_argument(
        "--if-running", action="store_true", help="print nothing (exit 0) when nothing runs"
    )
    user = commands.add_parser(
        "user", help="sign a user up through the local Auth and print an access token"
    )
    user.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: .data")
    user.add_argument("--email", required=True)
    user.add_argument("--name", default="", help="full name (user metadata)")
    user.add_argument(
        "--password", default=None, help="a new user's password (default: a random one)"
    )
    args = parser.parse_args(argv)

    if args.command == "user":
        try:
            print(create_user(args.data_dir, args.email, args.name, args.password))
        except (DevstackError, OSError) as exc:
            print(f"user: {exc}", file=sys.stderr)
            return 1
        return 0

    if args.command == "env":
        try:
            print("\n".join(env_lines(args.data_dir)))
        except DevstackError as exc:
            if args.if_running:
                return 0
            print(f"env: {exc}", file=sys.stderr)
            return 1
        return 0

    logging.basicConfig(level=logging.INFO, format="devstack | %(message)s", stream=sys.stdout)
    return run_up(
        args.data_dir,
        services=None if args.no_services else default_services,
        migrate=not args.no_migrate,
    )


if __name__ == "__main__":
    sys.exit(main())
