"""Run a service's ASGI app under granian, after its settings were checked.

Settings are loaded (and a bad one reported in one line, exit 2) in the parent process before
granian starts, so a misconfigured service never gets as far as a worker traceback.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import msgspec
from granian.constants import Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import Server
from prometheus_client import values

from xtyl_common.logging import configure_logging
from xtyl_common.settings import BaseSettings, load_settings_or_exit

#: The most a request's head (request line and headers) may take: past it the server answers a
#: bare 431 and closes. Each open connection may hold this much, so it bounds what unfinished
#: heads cost (200 connections x 64 KiB = 12.5 MiB; it was 1.5 MiB each, 300 MB in all). A
#: token over ``max_token_bytes`` (8 KiB) that fits still gets 401 ``token_too_large``.
MAX_HEADER_BUFFER_BYTES = 64 * 1024
#: Slow-header clients (slowloris) are cut after this long.
HEADER_READ_TIMEOUT_MS = 10_000


def share_metrics_between_workers() -> None:
    """prometheus-client's multiprocess mode for the granian workers about to be forked: each
    writes its numbers to files in ``PROMETHEUS_MULTIPROC_DIR`` (a fresh directory unless the
    operator set one) and ``/metrics`` adds them up (:func:`xtyl_common.metrics.exposition`)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="xtyl-metrics-")
    # the value class is chosen at import: choose again now that the directory is set
    values.ValueClass = values.get_value_class()


def serve(
    *,
    program: str,
    factory: str,
    settings_cls: type[BaseSettings],
    extra_settings: Sequence[tuple[type[msgspec.Struct], str]] = (),
    workers: int | None = None,
) -> None:
    """``factory`` is ``"package.module:function"`` returning the app, called in each worker.

    ``extra_settings`` are ``(Struct, prefix)`` pairs checked up front too (e.g. the event
    backbone's ``EVENTS_*``), so any bad variable stops the process with one line.
    """
    settings = load_settings_or_exit(settings_cls, program=program)
    for cls, prefix in extra_settings:
        load_settings_or_exit(cls, program=program, prefix=prefix)
    configure_logging(settings.log_level, json_logs=settings.log_json)
    worker_count = workers or int(os.environ.get("WEB_CONCURRENCY", "1"))
    if worker_count > 1:
        share_metrics_between_workers()
    levels = msgspec.convert(settings.log_level.lower(), LogLevels)
    Server(
        factory,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=worker_count,
        loop=Loops.auto,
        factory=True,
        log_enabled=False,
        log_level=levels,
        respawn_failed_workers=True,
        http1_settings=HTTP1Settings(
            header_read_timeout=HEADER_READ_TIMEOUT_MS, max_buffer_size=MAX_HEADER_BUFFER_BYTES
        ),
        workers_kill_timeout=30,
    ).serve()
