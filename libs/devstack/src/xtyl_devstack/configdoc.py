"""The configuration table of the README, made from the settings Structs themselves.

A development tool: it knows every service by name, so it lives here in the devstack (never
deployed), not in ``xtyl_common``, which knows no service.

``python -m xtyl_devstack.configdoc`` prints it, ``--write README.md`` refreshes the README; a
unit test fails when the README's copy drifts, so the table always lists every variable, its
default and who reads it.
"""

from __future__ import annotations

import importlib
import sys
from collections import defaultdict
from pathlib import Path

import msgspec

#: (programs, "module:Settings", variable prefix) for every struct read from the environment.
READERS: tuple[tuple[str, str, str], ...] = (
    ("gateway", "xtyl_gateway.settings:GatewaySettings", ""),
    ("storage", "xtyl_storage.settings:StorageSettings", ""),
    ("rag, rag-worker", "xtyl_rag.settings:RagSettings", ""),
    ("notify, notify-worker", "xtyl_notify.settings:NotifySettings", ""),
    ("every service and worker", "xtyl_common.events.settings:EventSettings", "EVENTS_"),
    ("rag-worker, notify-worker", "xtyl_common.events.worker_health:WorkerHealthSettings", ""),
)

#: What each variable means. A unit test fails when a settings field has no line here.
DESCRIPTIONS: dict[str, str] = {
    "HOST": "interface the HTTP server binds (a worker's health listener too)",
    "PORT": "TCP port of the HTTP server",
    "HEALTH_PORT": "TCP port of a worker's health listener: `/livez`, `/readyz`, `/metrics`"
    " (Kubernetes probes 8081)",
    "LOG_LEVEL": "debug, info, warning, error or critical",
    "LOG_JSON": "`true`: JSON lines; `false`: console; unset: JSON unless on a terminal",
    "XTYL_ENV": "`production` or `local` (set by `make up`)",
    "DATABASE_URL": "Postgres URL (Supabase: the pooler URL; port 6543 turns prepared"
    " statements off)",
    "MIGRATIONS_DATABASE_URL": "Postgres URL for `make migrate` (a session connection, port"
    " 5432); defaults to `DATABASE_URL`",
    "DB_POOL_MAX": "largest number of Postgres connections per process",
    "REDIS_URL": "Redis 7 URL (streams, rate limits, arq)",
    "SUPABASE_URL": "project URL; enables ES256/RS256 keys from its JWKS and the exact `iss` check",
    "SUPABASE_JWT_SECRET": "legacy HS256 JWT secret (Settings > API); set this, `SUPABASE_URL`,"
    " or both",
    "SUPABASE_ANON_KEY": "the project's anon key, refused by name on user routes (optional)",
    "SUPABASE_SERVICE_ROLE_KEY": "the service-role key: the gateway deletes accounts with it"
    " (Supabase's admin API; `DELETE /v1/me` is 503 without it); refused by name on user routes",
    "INTERNAL_JWT_SECRET": "signs service-to-service tokens (32+ characters, not the Supabase"
    " secret)",
    "JWT_LEEWAY_S": "clock skew allowed on `exp`/`nbf`/`iat`, at most 30",
    "STORAGE_URL": "base URL of the storage service",
    "RAG_URL": "base URL of the RAG service",
    "NOTIFY_URL": "base URL of the notify service",
    "UPSTREAM_CONNECT_TIMEOUT_S": "gateway → service connect timeout",
    "UPSTREAM_READ_TIMEOUT_S": "longest silence between two reads of a service's response, from"
    " the end of the request body; keep it above each service's own deadline (storage:"
    " `REQUEST_DEADLINE_S`)",
    "UPSTREAM_POOL_SIZE": "most exchanges in flight to one service from one gateway process",
    "UPSTREAM_POOL_WAIT_S": "longest wait for a free exchange slot to a service; past it, 503"
    " `upstream_busy`",
    "REQUEST_BODY_IDLE_TIMEOUT_S": "longest silence while a client sends a request body; past"
    " it, 408 `request_timeout`",
    "USER_MAX_IN_FLIGHT": "most requests one user (or address, on anonymous routes) has in"
    " flight at once per gateway process; past it, 429 `too_many_in_flight`; below"
    " UPSTREAM_POOL_SIZE",
    "CORS_ORIGINS": "comma-separated origins of the frontend",
    "RATE_LIMIT_REQUESTS": "requests per user per window on every /v1 route",
    "RATE_LIMIT_WINDOW_S": "length of the rate-limit window",
    "RATE_LIMIT_ROUTES": "tighter per-route limits per window, e.g. `/v1/answer=30,/v1/files=120`",
    "RATE_LIMIT_REDIS_TIMEOUT_S": "the rate limiter's budget for each wait on Redis; past it (or"
    " while Redis keeps failing) requests pass unlimited",
    "R2_ENDPOINT": "S3 endpoint of R2 (`https://<account>.r2.cloudflarestorage.com`)",
    "R2_ACCESS_KEY": "R2 API token access key id",
    "R2_SECRET_KEY": "R2 API token secret",
    "R2_BUCKET": "bucket name",
    "R2_PUBLIC_URL": "public base URL of the bucket; empty: answers carry presigned URLs",
    "S3_CONNECT_TIMEOUT_S": "S3 connect timeout",
    "S3_READ_TIMEOUT_S": "S3 read timeout of one attempt (of 3); with the connect timeout at"
    " most `REQUEST_DEADLINE_S`",
    "REQUEST_DEADLINE_S": "the most an upload's own work (S3 with its retries, Postgres) may"
    " take, waiting for the client's bytes not counted; past it 504 `storage_timeout` and"
    " nothing is stored; keep it below the gateway's `UPSTREAM_READ_TIMEOUT_S`",
    "IDEMPOTENCY_KEY_TTL_S": "how long an `Idempotency-Key` of `POST /v1/files` is remembered"
    " (60 s to 7 days)",
    "MAX_UPLOAD_BYTES": "largest upload through the service, counted while streaming (413)",
    "MAX_PRESIGNED_UPLOAD_BYTES": "largest presigned direct upload (at most 5 GiB)",
    "ALLOWED_CONTENT_TYPES": "comma-separated `type/sub`, `type/*` or `*/*` accepted (415)",
    "UPLOAD_PART_BYTES": "multipart part size (R2: equal parts of at least 5 MiB)",
    "UPLOAD_PART_CONCURRENCY": "parts of one upload in flight",
    "PRESIGN_TTL_S": "lifetime of presigned GET and PUT URLs (at most 900)",
    "EVENTS_STREAM_PREFIX": "Redis stream keys are `<prefix>:<domain>` (users, files, documents)",
    "EVENTS_STREAM_MAXLEN": "approximate cap per stream (XADD MAXLEN ~); keep far above any lag",
    "EVENTS_DEAD_LETTER_MAXLEN": "approximate cap of each `<stream>:dead` stream",
    "EVENTS_STREAM_RETENTION_S": "stream entries every consumer group has handled are trimmed"
    " once older than this (entries not handled yet stay however old)",
    "EVENTS_DEAD_LETTER_RETENTION_S": "dead letters are trimmed this long after they were"
    " dead-lettered",
    "EVENTS_RELAY_BATCH_SIZE": "outbox rows published per transaction",
    "EVENTS_RELAY_POLL_INTERVAL_S": "relay poll interval (LISTEN/NOTIFY wakes it sooner)",
    "EVENTS_RELAY_BACKOFF_INITIAL_S": "first wait after a failed publish",
    "EVENTS_RELAY_BACKOFF_MAX_S": "longest wait between publish attempts",
    "EVENTS_OUTBOX_RETENTION_S": "published outbox rows are deleted after this long",
    "EVENTS_PRUNE_INTERVAL_S": "how often old outbox rows are pruned and the streams trimmed",
    "EVENTS_RECOVERY_CHECK_INTERVAL_S": "how often a relay checks that Redis kept its data;"
    " after a loss it publishes again what the consumer groups had not handled",
    "EVENTS_READ_BLOCK_MS": "XREADGROUP BLOCK time of a worker's stream consumer",
    "EVENTS_CLAIM_IDLE_MS": "entries pending this long are taken over (XAUTOCLAIM)",
    "EVENTS_MAX_DELIVERIES": "an entry delivered more often (workers died on it) is"
    " dead-lettered; takeovers while it waited for a retry do not count",
    "EVENTS_MAX_TRIES": "tries of an entry failing with an unexpected error (a bug) before it"
    " is dead-lettered",
    "EVENTS_RETRY_BACKOFF_S": "first retry delay of a failed job (doubling, with jitter)",
    "EVENTS_RETRY_BACKOFF_MAX_S": "longest retry delay (a dependency's Retry-After can ask for"
    " more)",
    "EVENTS_RETRY_HORIZON_S": "transient failures (a dependency down, slow or rate limiting) are"
    " retried this long after an entry's first failure, then one last try, then dead-lettered",
    "EVENTS_HANDLER_TIMEOUT_S": "one handler call may take this long",
    "EVENTS_MAX_JOBS": "stream handlers running at once per worker process (it reads no more"
    " entries than it has free)",
    "EVENTS_GRACE_PERIOD_S": "how long a stopping worker lets running jobs finish",
    "EVENTS_KEEP_RESULT_S": "how long a handled entry's done marker is kept (duplicate guard: a"
    " consumer taking it over acknowledges it instead of running it again)",
    "EVENTS_RETRY_POLL_S": "how often a consumer starts the retries whose time has come",
    "BREVO_API_KEY": "Brevo API key (`api-key` header); any value works with the local stand-in",
    "BREVO_API_URL": "Brevo's API base URL (the local stand-in under `make up`)",
    "BREVO_CONNECT_TIMEOUT_S": "connect timeout of one Brevo request",
    "BREVO_TIMEOUT_S": "total timeout of one Brevo request",
    "BREVO_WEBHOOK_SECRET": "shared secret of `POST /webhooks/brevo` (16+ characters); unset: 404",
    "SEND_EMAIL_HOOK_SECRET": "secret of Supabase Auth's Send Email Hook"
    " (`POST /webhooks/auth/send-email`), `v1,whsec_<base64>`; unset: 404",
    "BREVO_AUTH_TEMPLATES": "Brevo templates for Supabase Auth's emails, `action=template id`"
    " comma-separated (`recovery=12,signup=13`); others are rendered by notify",
    "EMAIL_SENDER": "the From of every email, e.g. `xtyl <no-reply@xtyl.app>`",
    "APP_URL": "the frontend's base URL, for links in emails",
    "EMBEDDER": "`local` (all-MiniLM-L6-v2 on ONNX Runtime) or `openai` (any OpenAI-compatible"
    " /embeddings)",
    "EMBEDDING_MODEL": "model name for `EMBEDDER=openai` (required then)",
    "EMBEDDING_DIMENSION": "vector size for `EMBEDDER=openai` (required then; checked on replies)",
    "EMBEDDINGS_URL": "OpenAI-compatible API base for embeddings",
    "EMBEDDING_BATCH_SIZE": "texts per embedding call (default 16 local, 64 remote)",
    "EMBEDDING_TIMEOUT_S": "timeout of one embedding call",
    "EMBEDDING_CONNECT_TIMEOUT_S": "connect timeout of the embeddings API",
    "EMBEDDING_RETRIES": "retries of an embedding call on 429/5xx",
    "EMBEDDING_BACKOFF_BASE_S": "first backoff of a retried embedding call",
    "EMBEDDING_BACKOFF_MAX_S": "longest backoff; a longer Retry-After fails the call for a requeue",
    "EMBEDDING_THREADS": "ONNX Runtime threads for the local model (0: one per core)",
    "OPENROUTER_API_KEY": "OpenRouter key, for embeddings (`EMBEDDER=openai`) and answers",
    "STORAGE_TIMEOUT_S": "timeout of fetching a file's bytes from the storage service",
    "STORAGE_READY_WAIT_S": "a file's indexing run waits this long for storage's `/readyz`"
    " before it claims the document (no try spent); keep below `EVENTS_HANDLER_TIMEOUT_S`",
    "LLM_URL": "OpenAI-compatible chat completions base URL",
    "LLM_MODEL": "model for `/v1/answer`; unset: extractive answers from the best chunks",
    "LLM_TIMEOUT_S": "longest silence while an answer streams",
    "LLM_MAX_TOKENS": "longest answer",
    "SEARCH_EXACT_MAX_CHUNKS": "owners with at most this many chunks get an exact scan (recall"
    " 1.0); above, HNSW (measured crossover, bench/bench_rag.py)",
    "SEARCH_EF_SEARCH": "base `hnsw.ef_search`, widened for owners who are a small share",
    "SEARCH_MAX_SCAN_TUPLES": "`hnsw.max_scan_tuples` of the iterative scan",
    "SEARCH_FULLTEXT_SCAN_MAX_CHUNKS": "full text: owners with at most this many chunks are read"
    " row by row; above, the `(owner_id, tsv)` GIN index (measured crossover,"
    " bench/bench_rag.py)",
    "MAX_DOCUMENT_BYTES": "largest document the worker indexes",
    "INDEX_CONCURRENCY": "documents indexed at once per worker",
    "EXTRACTION_WORKERS": "child processes that extract text (memory- and time-capped)",
    "EXTRACTION_TIMEOUT_S": "wall-clock cap of one extraction",
    "EXTRACTION_MEMORY_MB": "address-space cap of an extraction child",
    "STUCK_AFTER_S": "a document in a non-final state this long is re-emitted by the reconciler",
    "MAX_INDEX_ATTEMPTS": "after this many tries a document ends `failed` (too_many_attempts)",
    "INDEX_LEASE_S": "an indexing run's lease on its document, renewed every third of it; a"
    " killed run's document is taken over within `EVENTS_CLAIM_IDLE_MS` + this",
    "EVENTS_DB_TIMEOUT_S": "timeout of the relay's Postgres statements",
    "EVENTS_REDIS_TIMEOUT_S": "timeout of the backbone's Redis commands",
    "ACCOUNT_DELETION_MAX_AUTH_AGE_S": "`DELETE /v1/me` needs a sign-in at most this old (the"
    " token's `amr`), else 403 `reauthentication_required`; 0 turns the check off",
    "QUOTA_STORAGE_BYTES": "bytes one user may keep stored; past it 403 `quota_storage_bytes`",
    "QUOTA_FILES": "files one user may keep; past it 403 `quota_files`",
    "QUOTA_DOCUMENTS": "documents one user may keep; past it 403 `quota_documents`",
    "QUOTA_CHUNKS": "chunks one user's documents may hold; past it 403 `quota_chunks`",
    "QUOTA_ANSWERS_PER_DAY": "answers one user may ask per UTC day; past it 429"
    " `quota_answers_per_day`",
    "ERASURE_BATCH_SIZE": "erasing a deleted user: rows per delete (storage: also keys per"
    " DeleteObjects, at most 1000)",
    "ERASURE_BATCH_PAUSE_S": "pause between two erasure batches, to pace a big erasure",
    "DOCUMENT_EMAIL_WINDOW_S": "at most one document email per user per window; the rest of a"
    " window's documents go in one digest",
    "DIGEST_POLL_INTERVAL_S": "how often notify-worker sends the digests that are due",
    "PUBLIC_API_URL": "the gateway's public base URL, for links in emails (one-click"
    " unsubscribe); required unless `XTYL_ENV=local`",
    "EMAIL_HASH_PEPPER": "keys the hashes that stand for addresses (suppressions, erased email"
    " logs); 32+ characters, never rotated; required unless `XTYL_ENV=local`",
    "UNSUBSCRIBE_SECRET": "signs one-click unsubscribe links (`|`-separated for rotation);"
    " defaults to one derived from `INTERNAL_JWT_SECRET`",
}

BEGIN = "<!-- configuration table: generated by `python -m xtyl_devstack.configdoc` -->"
END = "<!-- end of configuration table -->"


def _settings_classes() -> list[tuple[str, type[msgspec.Struct], str]]:
    found: list[tuple[str, type[msgspec.Struct], str]] = []
    for program, target, prefix in READERS:
        module_name, _, name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        found.append((program, getattr(module, name), prefix))
    return found


def _default(field: msgspec.structs.FieldInfo) -> str:
    if field.required:
        return "**required**"
    value = field.default
    if value is None:
        return "(unset)"
    if value == "":
        return '""'
    return f"`{value}`"


def variables() -> set[str]:
    return {
        (prefix + field.name).upper()
        for _, cls, prefix in _settings_classes()
        for field in msgspec.structs.fields(cls)
    }


def table() -> str:
    readers: dict[str, list[str]] = defaultdict(list)
    defaults: dict[str, set[str]] = defaultdict(set)
    for program, cls, prefix in _settings_classes():
        for field in msgspec.structs.fields(cls):
            name = (prefix + field.name).upper()
            readers[name].append(program)
            defaults[name].add(_default(field))
    lines = [BEGIN, "", "| variable | default | read by | meaning |", "|---|---|---|---|"]
    for name in sorted(readers):
        default = " / ".join(sorted(defaults[name]))
        meaning = DESCRIPTIONS.get(name, "")
        lines.append(f"| `{name}` | {default} | {', '.join(readers[name])} | {meaning} |")
    lines += ["", END]
    return "\n".join(lines)


def inject(readme: str) -> str:
    """``readme`` with the text between the markers replaced by the current table."""
    head, found, rest = readme.partition(BEGIN)
    if not found:
        raise ValueError("the README has no configuration table marker")
    _, found_end, tail = rest.partition(END)
    if not found_end:
        raise ValueError("the README's configuration table has no end marker")
    return head + table() + tail


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--write"] and len(args) == 2:
        path = Path(args[1])
        path.write_text(inject(path.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    print(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
