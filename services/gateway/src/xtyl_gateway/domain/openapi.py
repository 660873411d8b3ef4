"""One OpenAPI document for the public API: the gateway's own routes plus the public routes of
every service behind it, as the frontend sees them. Pure logic; fetching is the caller's.

Each service documents what it answers (``xtyl_common.openapi``); the gateway adds what it
answers itself before a request reaches a service, as problem details:

* every operation: 429 ``rate_limited`` with ``Retry-After`` (per user; per address on the
  anonymous webhook);
* every operation with a user behind it: 401 (the token is checked here first);
* every proxied operation: 400 (request framing the gateway does not forward), 503
  ``upstream_unavailable`` / ``upstream_busy``, 504 ``upstream_timeout``, and with a body 408
  ``request_timeout`` (it stalled) and 413.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from xtyl_common.errors import PROBLEM_CONTENT_TYPE
from xtyl_gateway.domain.routing import match_route

JsonObject = dict[str, Any]

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PROBLEM_REF = "#/components/schemas/Problem"

#: What the gateway itself answers, and when (see the module's docstring).
GATEWAY_PROBLEMS: dict[int, str] = {
    400: "The gateway refused the request's framing (`bad_request`, …)",
    401: "The bearer token is missing, malformed, expired or not for this API"
    " (`unauthorized`, `token_expired`, `token_invalid`, …)",
    408: "The request body stalled (`request_timeout`)",
    413: "The body is larger than allowed (`payload_too_large`)",
    429: "Rate limited (`rate_limited`): retry after `Retry-After` seconds",
    503: "The service behind the gateway is unavailable or busy (`upstream_unavailable`,"
    " `upstream_busy`) or one of its dependencies is",
    504: "The service behind the gateway did not answer in time (`upstream_timeout`)",
}


def gateway_problem(status: int) -> JsonObject:
    response: JsonObject = {
        "description": GATEWAY_PROBLEMS[status],
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": _PROBLEM_REF}}},
    }
    if status == 429:
        response["headers"] = {
            "Retry-After": {
                "description": "seconds to wait",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response


def gateway_statuses(path: str, operation: JsonObject) -> list[int]:
    """The problem statuses the gateway itself may answer for ``operation`` at ``path``."""
    route = match_route(path)
    statuses = {429}
    if route is None or not route.anonymous:
        statuses.add(401)
    if route is not None:
        statuses.update((400, 503, 504))
        if "requestBody" in operation:
            statuses.update((408, 413))
    return sorted(statuses)


def add_gateway_problems(paths: JsonObject) -> None:
    """Add the gateway's own answers to every operation of ``paths`` (in place); a status the
    service documents already keeps the service's description."""
    for path, item in paths.items():
        for method in _METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            responses: JsonObject = operation.setdefault("responses", {})
            for status in gateway_statuses(path, operation):
                responses.setdefault(str(status), gateway_problem(status))


def _rename_refs(node: Any, renames: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        out: JsonObject = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                name = value.rsplit("/", 1)[-1]
                out[key] = "#/components/schemas/" + renames.get(name, name)
            else:
                out[key] = _rename_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rename_refs(item, renames) for item in node]
    return node


def merge_public_api(own: JsonObject, services: Mapping[str, JsonObject]) -> JsonObject:
    """``own`` (the gateway's document) with the publicly routed paths of each service.

    A service's path is kept only when the gateway routes it to that very service; component
    schemas whose names collide with different content are prefixed with the service name.
    """
    merged = copy.deepcopy(own)
    paths: JsonObject = merged.setdefault("paths", {})
    components: JsonObject = merged.setdefault("components", {})
    schemas: JsonObject = components.setdefault("schemas", {})
    tags: list[JsonObject] = merged.setdefault("tags", [])
    known_tags = {tag.get("name") for tag in tags}
    for service, doc in sorted(services.items()):
        their_schemas: JsonObject = doc.get("components", {}).get("schemas", {})
        renames: dict[str, str] = {}
        for name, schema in their_schemas.items():
            if name in schemas and schemas[name] != schema:
                renames[name] = f"{service}_{name}"
        for name, schema in their_schemas.items():
            schemas[renames.get(name, name)] = _rename_refs(schema, renames)
        for path, item in doc.get("paths", {}).items():
            route = match_route(path)
            if route is None or route.upstream != service:
                continue
            paths[path] = _rename_refs(item, renames)
        for name, scheme in doc.get("components", {}).get("securitySchemes", {}).items():
            components.setdefault("securitySchemes", {}).setdefault(name, scheme)
        for tag in doc.get("tags", []):
            if tag.get("name") not in known_tags:
                tags.append(tag)
                known_tags.add(tag.get("name"))
    add_gateway_problems(paths)
    return merged
