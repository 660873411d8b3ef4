"""``GET /v1/openapi.json`` and ``GET /docs``: the whole public API in one document.

The services own their routes' schemas; the service merges the gateway's own document with
each one's (:meth:`~xtyl_gateway.service.GatewayService.public_api_document`).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.response import Response as LitestarResponse

from xtyl_gateway.domain.openapi import JsonObject
from xtyl_gateway.service import GatewayService

SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xtyl API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/v1/openapi.json", dom_id: "#ui"});</script>
</body></html>"""


@get("/v1/openapi.json", include_in_schema=False)
async def public_openapi(request: Request[Any, Any, Any]) -> Response[bytes]:
    gateway: GatewayService = request.app.state.gateway
    own: JsonObject = request.app.openapi_schema.to_schema()
    return Response(await gateway.public_api_document(own), media_type="application/json")


@get("/docs", include_in_schema=False, sync_to_thread=False)
def docs_page() -> LitestarResponse[str]:
    return LitestarResponse(SWAGGER_PAGE, media_type="text/html")
