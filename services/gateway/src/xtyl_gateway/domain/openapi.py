"""One OpenAPI document for the public API: the gateway's own routes plus the public routes of
every service behind it, as the frontend sees them. Pure logic; fetching is the caller's."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from xtyl_gateway.domain.routing import match_route

JsonObject = dict[str, Any]


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
    schemas: JsonObject = merged.setdefault("components", {}).setdefault("schemas", {})
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
        for tag in doc.get("tags", []):
            if tag.get("name") not in known_tags:
                tags.append(tag)
                known_tags.add(tag.get("name"))
    return merged
