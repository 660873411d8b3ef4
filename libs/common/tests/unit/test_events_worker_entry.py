"""A worker module's entry points from ``worker_entry``: nothing is read when the module is
imported, a missing variable stops arq's CLI with one line naming it (exit 2), and a misspelt
name is an ``AttributeError`` as for any module. (The process tests run such modules.)"""

from __future__ import annotations

from typing import Any

import pytest

from xtyl_common.events import EventSettings, worker_entry
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


def test_another_name_is_an_attribute_error() -> None:
    module_getattr, _ = worker_entry(WorkerSettingsForTest, worker_settings, program="test-worker")

    with pytest.raises(AttributeError, match="WorkerSetings"):
        module_getattr("WorkerSetings")
