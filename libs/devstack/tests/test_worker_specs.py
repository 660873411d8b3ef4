"""``make up`` runs storage-worker, rag-worker and notify-worker on one host: each gets a health
listener port of its own (never the production default, 8081), and the summary shows where."""

from __future__ import annotations

from pathlib import Path

from xtyl_devstack.services import WORKERS, default_services
from xtyl_devstack.stack import StackInfo
from xtyl_devstack.up import _port_of, _summary  # pyright: ignore[reportPrivateUsage]


def test_each_worker_gets_its_own_health_port_and_the_summary_shows_its_urls(
    tmp_path: Path,
) -> None:
    info = StackInfo(
        postgres_dsn="postgresql://postgres@127.0.0.1:1",
        database="xtyl",
        redis_url="redis://127.0.0.1:2/0",
        s3_endpoint="http://127.0.0.1:3",
        s3_access_key="a",
        s3_secret_key="b",
        s3_bucket="xtyl",
        data_dir=str(tmp_path),
        pid=1,
    )
    specs = default_services(info, {"HOST": "127.0.0.1"})
    workers = [spec for spec in specs if spec.name in {name for name, _ in WORKERS}]

    assert {spec.name for spec in workers} == {"storage-worker", "rag-worker", "notify-worker"}
    ports = [_port_of(spec) for spec in workers]
    assert None not in ports
    assert len(set(ports)) == 3
    assert 8081 not in ports
    summary = _summary(info, specs, tmp_path, 1.0)
    for spec, port in zip(workers, ports, strict=True):
        assert spec.env["HEALTH_PORT"] == str(port)
        assert spec.ready_url is None  # not waited for: a slow model load delays nothing
        assert f"http://127.0.0.1:{port}/readyz" in summary
        assert f"http://127.0.0.1:{port}/metrics" in summary
