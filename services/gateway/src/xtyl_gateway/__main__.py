"""``python -m xtyl_gateway`` / ``xtyl-gateway``: serve the gateway."""

from __future__ import annotations

from xtyl_common.events import EventSettings
from xtyl_common.serve import serve
from xtyl_gateway.settings import GatewaySettings


def main() -> None:
    serve(
        program="xtyl-gateway",
        factory="xtyl_gateway.app:app_from_env",
        settings_cls=GatewaySettings,
        extra_settings=[(EventSettings, "EVENTS_")],
    )


if __name__ == "__main__":
    main()
