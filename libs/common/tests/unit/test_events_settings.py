"""EventSettings from the environment; arq payloads without pickle; the common migrations."""

from __future__ import annotations

import pytest
from arq.jobs import deserialize_job_raw, deserialize_result, serialize_job, serialize_result

from xtyl_common.events.serialization import deserialize_job
from xtyl_common.events.serialization import serialize_job as msgpack_job
from xtyl_common.events.settings import ENV_PREFIX, EventSettings
from xtyl_common.migrate import package_migrations
from xtyl_common.settings import SettingsError, load_settings


def test_defaults_need_no_environment() -> None:
    settings = load_settings(EventSettings, environ={}, prefix=ENV_PREFIX)

    assert settings == EventSettings()
    assert settings.stream_prefix == "xtyl:events"
    assert settings.max_deliveries >= 1


def test_variables_override_defaults() -> None:
    settings = load_settings(
        EventSettings,
        environ={"EVENTS_STREAM_PREFIX": "staging:events", "EVENTS_CLAIM_IDLE_MS": "5000"},
        prefix=ENV_PREFIX,
    )

    assert settings.stream_prefix == "staging:events"
    assert settings.claim_idle_ms == 5000


@pytest.mark.parametrize(
    ("variable", "value"),
    [("EVENTS_MAX_JOBS", "0"), ("EVENTS_STREAM_MAXLEN", "lots"), ("EVENTS_STREAM_PREFIX", "x:")],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(EventSettings, environ={variable: value}, prefix=ENV_PREFIX)

    assert info.value.variable == variable


def test_arq_jobs_round_trip_through_msgpack() -> None:
    raw = serialize_job(
        "f", ("stream", "1-0", b"\x00bytes"), {"k": 1}, None, 123, serializer=msgpack_job
    )

    function, args, kwargs, job_try, enqueued = deserialize_job_raw(
        raw, deserializer=deserialize_job
    )

    assert raw[:1] != b"\x80"  # not a pickle
    assert (function, list(args), kwargs, job_try, enqueued) == (
        "f", ["stream", "1-0", b"\x00bytes"], {"k": 1}, None, 123
    )  # fmt: skip


def test_a_failed_jobs_exception_is_kept_as_text() -> None:
    raw = serialize_result(
        "f", (), {}, 2, 1, False, ValueError("boom"), 2, 3, "ref", "q", "id",
        serializer=msgpack_job,
    )  # fmt: skip

    result = deserialize_result(raw or b"", deserializer=deserialize_job)

    assert result.success is False
    assert result.result == "ValueError: boom"


def test_the_common_migration_set_installs_the_outbox_functions() -> None:
    migrations = package_migrations("common", "xtyl_common")

    assert [m.filename for m in migrations][:1] == ["0001_events_outbox.sql"]
    sql = migrations[0].sql
    for function in ("xtyl_events.install_outbox", "xtyl_events.add_event"):
        assert f"create or replace function {function}(" in sql
