"""The notify service's settings, read once from the environment (see the README's table)."""

from __future__ import annotations

from xtyl_common.settings import BaseSettings


class NotifySettings(BaseSettings, frozen=True, kw_only=True):
    database_url: str
    redis_url: str
    db_pool_max: int = 10
