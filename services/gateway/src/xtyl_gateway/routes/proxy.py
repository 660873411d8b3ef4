"""The public routes served by other services: each prefix of
:data:`~xtyl_gateway.domain.routing.ROUTES` mounted as a raw ASGI handler (so bodies stream
both ways), handing the request and the client's side of the exchange to the service.

Litestar gives a mounted handler no route template (``path_template`` is ``""``), so the
request would be counted as ``unmatched``: the handler names its route by its prefix, the
allow-list entry, whatever id the path carries (``xtyl_http_requests_total{route="/v1/files"}``).
A path the mount caught only by string prefix (``/v1/filesystem``) stays unmatched (404)."""

from __future__ import annotations

from litestar.handlers import asgi
from litestar.handlers.asgi_handlers import ASGIRouteHandler
from litestar.types import Receive, Scope, Send

from xtyl_gateway.domain.routing import ROUTES, is_under
from xtyl_gateway.routes.asgi import AsgiConnection, incoming_request
from xtyl_gateway.service import GatewayService


def proxy_handlers() -> list[ASGIRouteHandler]:
    """One mounted ASGI handler per public prefix (``/v1/files`` and everything below it)."""
    return [_mounted(prefix) for prefix, _ in ROUTES]


def _mounted(prefix: str) -> ASGIRouteHandler:
    async def forward(scope: Scope, receive: Receive, send: Send) -> None:
        gateway: GatewayService = scope["app"].state.gateway
        request = incoming_request(scope)
        if is_under(request.path, prefix):
            scope["path_template"] = prefix  # the scope the request is counted by (copy_scope)
        await gateway.forward(prefix, request, AsgiConnection(receive, send))

    return asgi(prefix, is_mount=True, copy_scope=False, name=f"proxy:{prefix}")(forward)
