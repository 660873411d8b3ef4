"""The gateway's settings, read once from the environment (see the README's table)."""

from __future__ import annotations

from xtyl_common.identity import AuthSettings


class GatewaySettings(AuthSettings, frozen=True, kw_only=True):
    database_url: str
    redis_url: str
    db_pool_max: int = 10
    #: Upstream base URLs of the services behind the gateway.
    storage_url: str = "http://127.0.0.1:8001"
    rag_url: str = "http://127.0.0.1:8002"
    notify_url: str = "http://127.0.0.1:8003"
    upstream_connect_timeout_s: float = 3.0
    #: Longest silence between two reads of an upstream response (answers stream slowly),
    #: counted from the end of the request body. Keep it above every service's own deadline
    #: (storage's ``REQUEST_DEADLINE_S``), so a service answers before the gateway gives up.
    upstream_read_timeout_s: float = 60.0
    #: Most exchanges in flight to one service from this process.
    upstream_pool_size: int = 256
    #: Longest wait for a free exchange slot to a service before 503 ``upstream_busy``.
    upstream_pool_wait_s: float = 2.0
    #: Longest silence while a client sends its request body before 408 ``request_timeout``.
    request_body_idle_timeout_s: float = 15.0
    #: Most requests one user (or one address, on anonymous routes) has in flight at once in
    #: this process; past it, 429 ``too_many_in_flight``.
    user_max_in_flight: int = 20
    #: Comma-separated origins of the frontend allowed by CORS.
    cors_origins: str = ""
    #: Per-user limit on every /v1 route: this many requests per window.
    rate_limit_requests: int = 600
    rate_limit_window_s: float = 60.0
    #: Tighter limits for some routes, per window: ``/v1/answer=30,/v1/files=120``.
    rate_limit_routes: str = "/v1/answer=30,/v1/me/export=10"
    #: The limiter's budget for each wait on Redis (a pooled connection, connecting, a
    #: reply); past it the request passes unlimited (fail open).
    rate_limit_redis_timeout_s: float = 0.05
    #: ``DELETE /v1/me`` needs a sign-in (password, link, OTP: the token's ``amr``) at most this
    #: old, so a stolen or long-lived session cannot delete the account; past it 403
    #: ``reauthentication_required``. 0 turns the check off (tokens without ``amr``).
    account_deletion_max_auth_age_s: int = 900

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rate_limit_requests < 1 or self.rate_limit_window_s <= 0:
            raise ValueError("must be a positive number (at `$.rate_limit_requests`)")
        if not 0 < self.rate_limit_redis_timeout_s <= 5:
            raise ValueError("must be in (0, 5] seconds (at `$.rate_limit_redis_timeout_s`)")
        for name in (
            "upstream_pool_size",
            "upstream_pool_wait_s",
            "request_body_idle_timeout_s",
            "user_max_in_flight",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"must be a positive number (at `$.{name}`)")
        if self.user_max_in_flight >= self.upstream_pool_size:
            raise ValueError(
                "must be below UPSTREAM_POOL_SIZE, so one user cannot take every connection"
                " to a service (at `$.user_max_in_flight`)"
            )
        try:
            self.route_limits()
        except ValueError as exc:
            raise ValueError(f"{exc} (at `$.rate_limit_routes`)") from None

    def upstream_urls(self) -> dict[str, str]:
        """The base URL of each service behind the gateway, by the name routes use."""
        return {"storage": self.storage_url, "rag": self.rag_url, "notify": self.notify_url}

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    def route_limits(self) -> dict[str, int]:
        limits: dict[str, int] = {}
        for item in self.rate_limit_routes.split(","):
            if not item.strip():
                continue
            prefix, sep, count = item.strip().partition("=")
            if not sep or not prefix.startswith("/") or not count.strip().isdigit():
                raise ValueError(f"expected /prefix=N items, got {item.strip()!r}")
            if int(count) < 1:
                raise ValueError(f"limit for {prefix} must be at least 1")
            limits[prefix.rstrip("/")] = int(count)
        return limits
