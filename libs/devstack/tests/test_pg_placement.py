"""A clone inside a dir PostgreSQL's account cannot enter (root cloning into a 0700 home):
``up`` keeps the cluster in a dir of this data dir's own that the account can reach, the real
unprivileged PostgreSQL runs there, and ``make clean`` removes it with the data dir."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from xtyl_devstack.pginstall import (
    PG_LOCATION_FILE,
    PG_SYSTEM_USER,
    PGDATA_ROOT_ENV,
    postgres_data_dir,
)
from xtyl_devstack.postgres import PostgresServer, run_sql

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="as root only: PostgreSQL then runs as an unprivileged account"
)


def test_a_data_dir_postgres_can_enter_keeps_its_cluster(public_tmp: Path) -> None:
    data_dir = public_tmp / "clone" / ".data"
    assert postgres_data_dir(data_dir) == data_dir / "pg"
    assert not (data_dir / PG_LOCATION_FILE).exists()


@pytest.mark.slow
def test_a_clone_in_a_0700_home_runs_postgres_elsewhere_and_cleans_it(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    public_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "root-home"
    home.mkdir()
    home.chmod(0o700)
    clone = home / "xtyl"
    data_dir = clone / ".data"
    monkeypatch.setenv(PGDATA_ROOT_ENV, str(public_tmp / "pgdata"))

    pg_dir = postgres_data_dir(data_dir)
    assert not pg_dir.is_relative_to(home)
    assert pg_dir.is_relative_to(public_tmp / "pgdata")
    assert (data_dir / PG_LOCATION_FILE).read_text().strip() == str(pg_dir.parent)
    assert postgres_data_dir(data_dir) == pg_dir  # the same data dir, the same cluster
    assert postgres_data_dir(public_tmp / "other" / ".data") != pg_dir

    server = PostgresServer(pg_dir, durable=True, log_path=data_dir / "logs" / "postgres.log")
    server.start()
    try:
        run_sql(server.dsn(), "CREATE TABLE kept (note text); INSERT INTO kept VALUES ('hi')")
        assert run_sql(server.dsn(), "SELECT note FROM kept") == "hi"
        assert (pg_dir / "PG_VERSION").owner() == PG_SYSTEM_USER
    finally:
        server.stop()

    done = subprocess.run(
        [
            shutil.which("make") or "make",
            "-s",
            "-f",
            str(request.config.rootpath / "Makefile"),
            "clean",
            f"DATA_DIR={data_dir}",
        ],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not pg_dir.parent.exists()
    assert not data_dir.exists()
