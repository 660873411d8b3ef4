"""A worker module's entry points from ``worker_entry``: ``WorkerSettings`` for arq's CLI is
built only when asked for, and a misspelt name is an ``AttributeError`` as for any module."""

from __future__ import annotations

from typing import Any

import pytest

from xtyl_common.events import worker_entry


def test_worker_settings_are_built_from_the_environment_only_when_asked_for() -> None:
    built: list[int] = []

    def settings_from_env() -> dict[str, Any]:
        built.append(1)
        return {"functions": [], "queue_name": "q"}

    module_getattr, main = worker_entry(settings_from_env)

    assert built == []  # importing the module reads nothing
    assert module_getattr("WorkerSettings") == {"functions": [], "queue_name": "q"}
    assert built == [1]
    assert callable(main)


def test_another_name_is_an_attribute_error() -> None:
    module_getattr, _ = worker_entry(dict)

    with pytest.raises(AttributeError, match="WorkerSetings"):
        module_getattr("WorkerSetings")
