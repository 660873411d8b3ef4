"""Numbered plain-SQL migrations, one runner for every service.

Each service ships ``<package>/migrations/NNNN_description.sql`` and declares the package under
the ``xtyl.migrations`` entry-point group. The runner:

* takes a session advisory lock, so any number of runners started at once apply each file once
  (the others wait, then find nothing to do);
* applies each pending file in its own transaction together with its bookkeeping row in
  ``xtyl_migrations.applied`` (service, version, name, sha256 checksum);
* refuses to run when an applied file was edited since (checksum mismatch), naming the file.

Run it against a session connection (Supabase's direct or session-pooler URL, port 5432):
advisory locks do not survive the transaction pooler. ``MIGRATIONS_DATABASE_URL`` overrides
``DATABASE_URL`` for that reason.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import entry_points

import asyncpg
import structlog

from xtyl_common.logging import configure_logging

log = structlog.stdlib.get_logger("xtyl.migrations")

ENTRY_POINT_GROUP = "xtyl.migrations"
_LOCK_KEY = 7_291_001_337  # one advisory lock for all xtyl migrations
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOKKEEPING = """
create schema if not exists xtyl_migrations;
create table if not exists xtyl_migrations.applied (
    service    text        not null,
    version    integer     not null,
    name       text        not null,
    checksum   text        not null,
    applied_at timestamptz not null default now(),
    primary key (service, version)
);
"""


class MigrationError(Exception):
    """A migration set cannot be applied; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class Migration:
    service: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


def load_migrations(service: str, files: Iterable[tuple[str, str]]) -> list[Migration]:
    """Parse ``(filename, sql)`` pairs; reject names that do not follow ``NNNN_name.sql``."""
    migrations: list[Migration] = []
    seen: dict[int, str] = {}
    for filename, sql in files:
        match = _FILE_RE.match(filename)
        if match is None:
            raise MigrationError(
                f"{service}/{filename}: migration files are named NNNN_lowercase_name.sql"
            )
        version = int(match.group(1))
        if version in seen:
            raise MigrationError(
                f"{service}/{filename}: version {version:04d} is also used by {seen[version]}"
            )
        seen[version] = filename
        migrations.append(Migration(service, version, match.group(2), sql))
    return sorted(migrations, key=lambda m: m.version)


def package_migrations(service: str, package: str) -> list[Migration]:
    directory = resources.files(package).joinpath("migrations")
    if not directory.is_dir():
        return []
    files = [
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in directory.iterdir()
        if entry.name.endswith(".sql")
    ]
    return load_migrations(service, files)


def discovered_services() -> list[tuple[str, str]]:
    """``(service, package)`` for every installed package that declares migrations."""
    found = [(ep.name, ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP)]
    # xtyl_common's own ("common", shared SQL functions such as the outbox) come first.
    return sorted(found, key=lambda item: (item[0] != "common", item[0]))


async def apply_migrations(
    conn: asyncpg.Connection, migrations: Sequence[Migration]
) -> list[Migration]:
    """Apply what is pending, under the advisory lock. Returns the migrations applied now."""
    applied_now: list[Migration] = []
    await conn.execute("select pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_BOOKKEEPING)
        rows = await conn.fetch(
            "select service, version, name, checksum from xtyl_migrations.applied"
        )
        done = {(r["service"], r["version"]): r for r in rows}
        for migration in migrations:
            row = done.get((migration.service, migration.version))
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"{migration.service}/{migration.filename} was edited after it was"
                        f" applied (database checksum {row['checksum'][:12]}, file"
                        f" {migration.checksum[:12]}); restore it and add a new migration"
                        " instead"
                    )
                continue
            async with conn.transaction():
                try:
                    await conn.execute(migration.sql)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"{migration.service}/{migration.filename} failed: {exc}"
                    ) from exc
                await conn.execute(
                    "insert into xtyl_migrations.applied (service, version, name, checksum)"
                    " values ($1, $2, $3, $4)",
                    migration.service,
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration)
            log.info("migration_applied", service=migration.service, file=migration.filename)
    finally:
        await conn.execute("select pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def migrate(url: str, services: Sequence[tuple[str, str]] | None = None) -> list[Migration]:
    """Apply every discovered (or given) service's migrations to the database at ``url``."""
    chosen = discovered_services() if services is None else list(services)
    migrations = [m for service, package in chosen for m in package_migrations(service, package)]
    conn: asyncpg.Connection = await asyncpg.connect(url, timeout=10)
    try:
        return await apply_migrations(conn, migrations)
    finally:
        await conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xtyl_common.migrate [--service NAME ...]``: apply migrations, one-line errors."""
    parser = argparse.ArgumentParser(
        prog="python -m xtyl_common.migrate",
        description="Apply every xtyl service's SQL migrations (MIGRATIONS_DATABASE_URL or"
        " DATABASE_URL).",
    )
    parser.add_argument("--service", action="append", help="only this service (repeatable)")
    parser.add_argument("--list", action="store_true", help="list services and files, apply none")
    args = parser.parse_args(argv)
    configure_logging(os.environ.get("LOG_LEVEL", "info"))

    services = discovered_services()
    if args.service:
        unknown = set(args.service) - {name for name, _ in services}
        if unknown:
            print(f"migrate: unknown service(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        services = [item for item in services if item[0] in args.service]
    if args.list:
        for service, package in services:
            for migration in package_migrations(service, package):
                print(f"{service}/{migration.filename}")
        return 0
    url = os.environ.get("MIGRATIONS_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not url:
        print(
            "migrate: configuration error: DATABASE_URL: is required but not set", file=sys.stderr
        )
        return 2
    try:
        applied = asyncio.run(migrate(url, services))
    except MigrationError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"migrate: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    print(f"migrate: {len(applied)} file(s) applied, database up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
