"""A worker module's entry points from ``worker_entry``: nothing is read when the module is
imported, a missing variable stops arq's CLI with one line naming it (exit 2), and a misspelt
name is an ``AttributeError`` as for any module. (The process tests run such modules.)"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from xtyl_common.events import EventSettings, FileUploaded, stream_worker_settings, worker_entry
from xtyl_common.events.worker import WORKER_HEALTH_KEY
from xtyl_common.events.worker_health import WorkerHealth
from xtyl_common.settings import BaseSettings


class WorkerSettingsForTest(BaseSettings, frozen=True, kw_only=True):
    redis_url: str


def worker_settings(settings: WorkerSettingsForTest, events: EventSettings) -> dict[str, Any]:
    return {"redis_url": settings.redis_url, "group_prefix": events.stream_prefix}


def test_a_missing_variable_stops_the_worker_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    module_getattr, _ = worker_entry(WorkerSettingsForTest, worker_settings, program="test-worker")

    with pytest.raises(SystemExit) as exited:
        module_getattr("WorkerSettings")  # what arq's CLI asks the module for

    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("test-worker: configuration error: REDIS_URL")


@pytest.mark.parametrize("value", ["eighty", "0", "70000"])
def test_a_bad_health_port_stops_the_worker_with_one_line_naming_it(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("HEALTH_PORT", value)
    module_getattr, _ = worker_entry(WorkerSettingsForTest, worker_settings, program="test-worker")

    with pytest.raises(SystemExit) as exited:
        module_getattr("WorkerSettings")

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("test-worker: configuration error: HEALTH_PORT")
    assert len(err.splitlines()) == 1


@pytest.fixture
def process_logging() -> Iterator[None]:
    """``worker_entry`` configures the process's logging (JSON lines): give the test process
    its own back afterwards, so no later test renders tracebacks the worker's way."""
    config = structlog.get_config()
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, logger_level in levels.items():
        logging.getLogger(name).setLevel(logger_level)


@pytest.mark.usefixtures("process_logging")
def test_the_worker_serves_its_health_on_host_and_health_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("HOST", "127.0.0.1")
    monkeypatch.setenv("HEALTH_PORT", "18181")

    def with_consumer(settings: WorkerSettingsForTest, events: EventSettings) -> dict[str, Any]:
        return stream_worker_settings(
            redis_url=settings.redis_url, group="g", handlers={FileUploaded: _handler}
        )

    module_getattr, _ = worker_entry(WorkerSettingsForTest, with_consumer, program="xtyl-x-worker")
    health = module_getattr("WorkerSettings")[WORKER_HEALTH_KEY]

    assert isinstance(health, WorkerHealth)
    assert (health.name, health.host, health.port) == ("x-worker", "127.0.0.1", 18181)


async def _handler(event: FileUploaded, ctx: dict[str, Any]) -> None:
    pass


def test_another_name_is_an_attribute_error() -> None:
    module_getattr, _ = worker_entry(WorkerSettingsForTest, worker_settings, program="test-worker")

    with pytest.raises(AttributeError, match="WorkerSetings"):
        module_getattr("WorkerSetings")
