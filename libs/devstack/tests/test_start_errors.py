"""A server that cannot start says so in one line, followed by the end of its log."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from xtyl_devstack.errors import ServerStartError
from xtyl_devstack.postgres import PostgresServer
from xtyl_devstack.redis import RedisServer


def test_postgres_on_a_taken_port_reports_why(public_tmp: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = PostgresServer(
            public_tmp / "pg", port=taken.getsockname()[1], log_path=public_tmp / "pg.log"
        )
        with pytest.raises(ServerStartError) as caught:
            server.start()
    first_line, *log_lines = str(caught.value).splitlines()
    assert first_line.startswith("postgres exited with code 1 while starting")
    assert str(public_tmp / "pg.log") in first_line
    assert any("could not bind" in line or "already in use" in line for line in log_lines)
    assert not server.running


def test_redis_on_a_taken_port_reports_why(public_tmp: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = RedisServer(
            public_tmp / "redis", port=taken.getsockname()[1], log_path=public_tmp / "redis.log"
        )
        with pytest.raises(ServerStartError) as caught:
            server.start()
    first_line, *log_lines = str(caught.value).splitlines()
    assert first_line.startswith("redis exited with code 1 while starting")
    assert any("Address already in use" in line for line in log_lines)
