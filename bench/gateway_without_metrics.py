"""The gateway with every metric observation turned into a no-op, for bench_gateway.py only.

prometheus-client's ``Counter``, ``Gauge`` and ``Histogram`` are replaced, before anything of
xtyl is imported, by one class whose ``labels()``, ``inc()``, ``dec()``, ``set()`` and
``observe()`` do nothing: the per-request observations (``xtyl_http_*`` in the middleware, the
upstream histogram, the rate limiter's and the token verifier's counters) cost nothing, the
rest of the gateway is the same code. Not a production switch: metrics are always on.

    python -m gateway_without_metrics     # with bench/ on PYTHONPATH, the gateway's settings
"""

from __future__ import annotations

from typing import Any

import prometheus_client


class NoMetric:
    """Takes every argument a metric does; does nothing with them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def labels(self, *args: Any, **kwargs: Any) -> NoMetric:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


prometheus_client.Counter = NoMetric  # type: ignore[misc,assignment]
prometheus_client.Gauge = NoMetric  # type: ignore[misc,assignment]
prometheus_client.Histogram = NoMetric  # type: ignore[misc,assignment]

from xtyl_common.events import EventSettings  # noqa: E402 - after the replacement, on purpose
from xtyl_common.serve import serve  # noqa: E402
from xtyl_gateway.app import app_from_env  # noqa: E402
from xtyl_gateway.settings import GatewaySettings  # noqa: E402

__all__ = ["app_from_env"]


def main() -> None:
    serve(
        program="xtyl-gateway (no metrics)",
        factory="gateway_without_metrics:app_from_env",
        settings_cls=GatewaySettings,
        extra_settings=[(EventSettings, "EVENTS_")],
    )


if __name__ == "__main__":
    main()
