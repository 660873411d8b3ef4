"""``EventSettings``: one frozen Struct for the outbox relay and the stream consumers.

Read it with ``load_settings(EventSettings, prefix="EVENTS_")``: ``EVENTS_STREAM_PREFIX``,
``EVENTS_STREAM_MAXLEN``, ``EVENTS_CLAIM_IDLE_MS`` ... Every field has a default that suits
production; tests shrink the timings.
"""

from __future__ import annotations

import msgspec

from xtyl_common.events.contracts import DEFAULT_STREAM_PREFIX

ENV_PREFIX = "EVENTS_"


class EventSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    #: Streams are ``<stream_prefix>:<domain>``; dead letters ``<stream>:dead``.
    stream_prefix: str = DEFAULT_STREAM_PREFIX
    #: Approximate cap (``XADD MAXLEN ~``) per stream. Entries a group has not read yet are
    #: trimmed too once the stream is this long, so keep it far above any expected lag.
    stream_maxlen: int = 1_000_000
    dead_letter_maxlen: int = 100_000
    #: Entries every consumer group has handled are trimmed once older than this; entries a
    #: group has not handled are kept, however old (see .retention). Events carry personal
    #: data (``user.created``: an address): this is how long Redis may hold it.
    stream_retention_s: float = 7 * 24 * 3600
    #: Dead letters are trimmed once dead-lettered longer ago than this.
    dead_letter_retention_s: float = 30 * 24 * 3600

    # --- relay (outbox -> stream) ---
    #: Rows taken (and XADDed in one MULTI/EXEC) per transaction.
    relay_batch_size: int = 200
    #: Poll even without NOTIFY (Supabase's transaction pooler drops LISTEN).
    relay_poll_interval_s: float = 1.0
    relay_backoff_initial_s: float = 0.2
    #: A cap, jitter included: rows pending when Postgres or Redis returns are published
    #: at most this long after it (a retry against a down server is one refused connect).
    relay_backoff_max_s: float = 5.0
    #: Published rows are deleted after this long.
    outbox_retention_s: float = 7 * 24 * 3600
    #: How often a relay prunes its outbox and trims the streams (see .retention).
    prune_interval_s: float = 300.0
    #: How often a relay checks that Redis kept its data (the epoch key) and records how far
    #: the consumer groups got; after a loss it publishes again what was lost. See .recovery.
    recovery_check_interval_s: float = 5.0

    # --- consumer (stream entry -> handler, see .consumer) ---
    #: ``XREADGROUP BLOCK``: how long one read waits for new entries.
    read_block_ms: int = 1_000
    #: Entries pending (not acked, not heartbeated) this long are taken over with XAUTOCLAIM.
    claim_idle_ms: int = 30_000
    #: An entry delivered more often than this (workers died on it) is dead-lettered; takeovers
    #: of an entry that was waiting for a retry do not count (see :mod:`.retries`).
    max_deliveries: int = 5
    #: Tries of an entry whose handler fails with an unexpected error (a bug) before it is
    #: dead-lettered. (Runs that end without an outcome, a worker dying or stopping during
    #: each, count as deliveries: ``max_deliveries``.)
    max_tries: int = 5
    #: Transient failures (a dependency down, slow or rate limiting: see :mod:`.retries`) are
    #: retried after ``retry_backoff_s`` doubling up to ``retry_backoff_max_s`` (with jitter),
    #: or after the dependency's ``Retry-After``, until ``retry_horizon_s`` after the entry's
    #: first failure; then one last attempt, then the dead-letter stream.
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 300.0
    retry_horizon_s: float = 24 * 3600.0
    #: One handler call may take this long; then it counts as a failed try.
    handler_timeout_s: float = 300.0
    #: Handlers running at once per worker process; the consumer reads no more entries than
    #: it has free slots.
    max_jobs: int = 10
    #: How long a stopping worker lets running jobs finish (keep below the pod's grace).
    grace_period_s: float = 25.0
    #: How long a handled entry's done marker is kept (at least 3 x ``claim_idle_ms``): a
    #: consumer taking the entry over meanwhile acknowledges it instead of running it again.
    keep_result_s: float = 60.0
    #: How often a consumer starts the retries whose time has come.
    retry_poll_s: float = 0.25

    #: Timeout of one Redis command (blocking reads add ``read_block_ms``).
    redis_timeout_s: float = 5.0
    #: Timeout of one database statement of the relay / reconciler.
    db_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        positive = {
            "stream_maxlen": self.stream_maxlen,
            "relay_batch_size": self.relay_batch_size,
            "max_deliveries": self.max_deliveries,
            "max_tries": self.max_tries,
            "max_jobs": self.max_jobs,
            "claim_idle_ms": self.claim_idle_ms,
            "read_block_ms": self.read_block_ms,
            "stream_retention_s": self.stream_retention_s,
            "dead_letter_retention_s": self.dead_letter_retention_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"must be greater than 0 (at `$.{name}`)")
        if not 0 < self.retry_backoff_s <= self.retry_backoff_max_s:
            raise ValueError(
                "must be greater than 0 and at most EVENTS_RETRY_BACKOFF_MAX_S"
                " (at `$.retry_backoff_s`)"
            )
        if self.retry_horizon_s < 0:
            raise ValueError("must be 0 or more (at `$.retry_horizon_s`)")
        if not self.stream_prefix or self.stream_prefix.endswith(":"):
            raise ValueError("must be non-empty and not end with ':' (at `$.stream_prefix`)")
