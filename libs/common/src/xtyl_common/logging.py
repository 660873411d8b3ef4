"""structlog set-up: JSON lines off a terminal, readable console output on one.

Context (``request_id``, ``job_id``, ``user_id``) is bound through contextvars by the request-id
middleware and the workers, so every line logged while handling a request carries it. Standard
library loggers (granian, asyncpg, aiohttp, arq) go through the same renderer.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
import structlog
from structlog.typing import Processor

from xtyl_common.tracing import add_trace_ids

_NOISY_LOGGERS = (
    "botocore",
    "aiobotocore",
    "urllib3",
    "asyncio",
    "aiohttp.access",
    "s3transfer",
    "arq.worker",
)

_json_encoder = msgspec.json.Encoder()


def _json_dumps(event: Any, **_: Any) -> str:
    return _json_encoder.encode(event).decode()


def configure_logging(level: str = "info", *, json_logs: bool | None = None) -> None:
    """Configure structlog and the standard library logging once per process."""
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    as_json = (not sys.stderr.isatty()) if json_logs is None else json_logs

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,  # trace_id / span_id while a span is current (tracing on)
    ]
    renderer: Processor
    if as_json:
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer()

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
