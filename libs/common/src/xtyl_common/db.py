"""asyncpg pools: pgvector and jsonb codecs, Supabase pooler awareness, start-up checks."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import msgspec
import structlog
from pgvector.asyncpg import register_vector

from xtyl_common.errors import Unavailable

log = structlog.stdlib.get_logger("xtyl.db")

#: Supabase's transaction pooler (Supavisor) listens on 6543 and keeps no prepared statements.
SUPABASE_TRANSACTION_POOLER_PORT = 6543

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


class DatabaseConfig(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    min_size: int = 1
    max_size: int = 10
    #: ``None`` means "decide from the URL": 0 on Supabase's transaction pooler (port 6543).
    statement_cache_size: int | None = None
    connect_timeout_s: float = 5.0
    command_timeout_s: float = 30.0
    #: register the pgvector codecs (the service stores vectors).
    vector: bool = False


class VectorExtensionMissingError(RuntimeError):
    """pgvector is not installed in the database the service is configured for."""


def uses_transaction_pooler(url: str) -> bool:
    try:
        return urlsplit(url).port == SUPABASE_TRANSACTION_POOLER_PORT
    except ValueError:
        return False


def statement_cache_size_for(config: DatabaseConfig) -> int:
    if config.statement_cache_size is not None:
        return config.statement_cache_size
    return 0 if uses_transaction_pooler(config.url) else 100


def redact_url(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _encode_json(value: object) -> str:
    return _json_encoder.encode(value).decode()


async def _init_connection(conn: asyncpg.Connection, *, vector_schema: str | None) -> None:
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_encode_json,
        decoder=_json_decoder.decode,
        format="text",
    )
    if vector_schema is not None:
        await register_vector(conn, schema=vector_schema)


async def vector_schema(conn: asyncpg.Connection) -> str | None:
    """The schema holding pgvector's ``vector`` type (``extensions`` on Supabase), or None."""
    schema: str | None = await conn.fetchval(
        "select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace"
        " where e.extname = 'vector'"
    )
    return schema


async def require_vector_extension(conn: asyncpg.Connection) -> str:
    schema = await vector_schema(conn)
    if schema is None:
        database = await conn.fetchval("select current_database()")
        raise VectorExtensionMissingError(
            f"the pgvector extension is not enabled in database {database!r}: on Supabase enable"
            " 'vector' under Database > Extensions, elsewhere run"
            " 'create extension vector;' as a superuser"
        )
    return schema


async def create_pool(config: DatabaseConfig) -> asyncpg.Pool:
    """A pool that connects lazily, so a service starts (not ready) while Postgres is down.

    When ``config.vector`` is set, the first connection checks that pgvector exists and raises
    :class:`VectorExtensionMissingError` with the way to enable it if not.
    """
    statement_cache_size = statement_cache_size_for(config)
    schema_holder: dict[str, str | None] = {"schema": None}

    async def init(conn: asyncpg.Connection) -> None:
        if config.vector and schema_holder["schema"] is None:
            schema_holder["schema"] = await require_vector_extension(conn)
        await _init_connection(conn, vector_schema=schema_holder["schema"])

    pool: asyncpg.Pool = asyncpg.create_pool(
        config.url,
        min_size=0,
        max_size=config.max_size,
        statement_cache_size=statement_cache_size,
        timeout=config.connect_timeout_s,
        command_timeout=config.command_timeout_s,
        max_inactive_connection_lifetime=300,
        init=init,
    )
    await pool  # min_size=0: opens no connection yet
    log.info(
        "db_pool_created",
        url=redact_url(config.url),
        max_size=config.max_size,
        statement_cache_size=statement_cache_size,
    )
    return pool


async def check_postgres(pool: asyncpg.Pool) -> None:
    """Readiness check: one round trip on a pooled connection."""
    async with pool.acquire(timeout=2.0) as conn:
        await conn.fetchval("select 1")


#: Errors that mean "the database cannot be reached or is shutting down", not "this query is
#: wrong": they become 503 for the caller; a constraint or syntax error stays a bug (500).
DB_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


@asynccontextmanager
async def connection(
    pool: asyncpg.Pool, *, timeout_s: float, unavailable: str
) -> AsyncGenerator[Any]:
    """A pooled connection; an unreachable database raises ``Unavailable(unavailable)``
    (code ``database_unavailable``) instead of a driver error."""
    try:
        async with pool.acquire(timeout=timeout_s) as conn:
            yield conn
    except DB_UNAVAILABLE_ERRORS as exc:
        log.warning("db_failed", error=type(exc).__name__)
        raise Unavailable(unavailable, code="database_unavailable") from exc
