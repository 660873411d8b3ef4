"""The gateway's settings, read once from the environment (see the README's table)."""

from __future__ import annotations

from xtyl_common.settings import BaseSettings


class GatewaySettings(BaseSettings, frozen=True, kw_only=True):
    database_url: str
    redis_url: str
    db_pool_max: int = 10
    #: Upstream base URLs of the services behind the gateway.
    storage_url: str = "http://127.0.0.1:8001"
    rag_url: str = "http://127.0.0.1:8002"
    notify_url: str = "http://127.0.0.1:8003"
    #: Comma-separated origins of the frontend allowed by CORS.
    cors_origins: str = ""

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]
