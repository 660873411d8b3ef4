"""Every request is counted by route template, method and status, with bounded labels: 1,000
distinct ids make one series; an unknown method or path adds none."""

from __future__ import annotations

from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from xtyl_common.metrics import http_labels
from xtyl_common.web import build_service_app


@get("/items/{item_id:int}", sync_to_thread=False)
def item(item_id: FromPath[int]) -> dict[str, int]:
    return {"id": item_id}


def samples(client: TestClient[Litestar], name: str) -> list[dict[str, str]]:
    text = client.get("/metrics").text
    return [
        {**sample.labels, "value": str(sample.value)}
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels.get("service") == "metrics-test"
    ]


def test_requests_are_counted_by_route_template_with_bounded_labels() -> None:
    app = build_service_app(
        title="metrics test", version="1", route_handlers=[item], service="metrics-test"
    )
    with TestClient(app) as client:
        for n in range(1000):
            assert client.get(f"/items/{n}").status_code == 200
        assert client.get("/no/such/route/123").status_code == 404
        assert client.request("BREW", "/items/1").status_code in (404, 405)
        client.get("/livez")
        counted = samples(client, "xtyl_http_requests_total")
        durations = samples(client, "xtyl_http_request_duration_seconds_count")
    routes = {(s["route"], s["method"], s["status"]): float(s["value"]) for s in counted}
    assert routes[("/items/{item_id}", "GET", "200")] == 1000.0
    assert not any("/livez" in route or "/metrics" in route for route, _, _ in routes)
    # neither the ids, nor the unknown path, nor the unknown method add a series
    assert not any("123" in route or method == "BREW" for route, method, _ in routes)
    assert len(routes) <= 3
    assert sum(float(s["value"]) for s in durations) == sum(routes.values())


def test_labels_of_an_unknown_method_or_unrouted_request_are_fixed_words() -> None:
    assert http_labels("brew", None) == ("other", "unmatched")
    assert http_labels("get", "/x/{id}") == ("GET", "/x/{id}")
