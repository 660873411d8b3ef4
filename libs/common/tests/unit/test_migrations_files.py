"""Migration files: naming rules and discovery (the database side is in integration tests)."""

from __future__ import annotations

import pytest

from xtyl_common.migrate import MigrationError, discovered_services, load_migrations


def test_files_sort_by_version_and_carry_checksums() -> None:
    migrations = load_migrations("svc", [("0002_b.sql", "select 2;"), ("0001_a.sql", "select 1;")])
    assert [m.filename for m in migrations] == ["0001_a.sql", "0002_b.sql"]
    assert migrations[0].checksum != migrations[1].checksum


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([("1_a.sql", "")], "named NNNN_lowercase_name.sql"),
        ([("0001_Upper.sql", "")], "named NNNN_lowercase_name.sql"),
        ([("0001_a.sql", ""), ("0001_b.sql", "")], "version 0001 is also used by 0001_a.sql"),
    ],
)
def test_bad_file_sets_are_refused(files: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(MigrationError, match=message):
        load_migrations("svc", files)


def test_every_service_declares_migrations_and_common_runs_first() -> None:
    names = [name for name, _ in discovered_services()]
    assert names[0] == "common"
    assert set(names) >= {"common", "gateway", "storage", "rag", "notify"}
