"""The public API document keeps what the gateway routes, and only that."""

from __future__ import annotations

from xtyl_gateway.domain.openapi import merge_public_api


def test_routed_paths_are_kept_and_internal_ones_dropped() -> None:
    own = {"openapi": "3.1.0", "paths": {"/v1/me": {"get": {}}}, "components": {"schemas": {}}}
    storage = {
        "paths": {
            "/v1/files": {"post": {"$ref": "#/components/schemas/File"}},
            "/internal/files/{id}": {"get": {}},
            "/livez": {"get": {}},
            "/v1/search": {"post": {}},  # not storage's to publish: routed to rag
        },
        "components": {"schemas": {"File": {"type": "object"}}},
        "tags": [{"name": "files"}],
    }
    merged = merge_public_api(own, {"storage": storage})
    assert set(merged["paths"]) == {"/v1/me", "/v1/files"}
    assert merged["components"]["schemas"]["File"] == {"type": "object"}
    assert merged["tags"] == [{"name": "files"}]
    assert own["paths"] == {"/v1/me": {"get": {}}}, "the gateway's own document is not changed"


def test_colliding_schema_names_are_prefixed_and_refs_follow() -> None:
    own = {"paths": {}, "components": {"schemas": {"Page": {"title": "gateway"}}}}
    rag = {
        "paths": {"/v1/documents": {"get": {"$ref": "#/components/schemas/Page"}}},
        "components": {"schemas": {"Page": {"title": "rag"}}},
    }
    merged = merge_public_api(own, {"rag": rag})
    assert merged["components"]["schemas"]["Page"] == {"title": "gateway"}
    assert merged["components"]["schemas"]["rag_Page"] == {"title": "rag"}
    assert merged["paths"]["/v1/documents"]["get"]["$ref"] == "#/components/schemas/rag_Page"


def test_gateway_answers_are_added_to_every_public_operation() -> None:
    own = {"paths": {"/v1/me": {"get": {"responses": {"200": {}}}}}, "components": {}}
    rag = {
        "paths": {
            "/v1/search": {
                "post": {"requestBody": {}, "responses": {"422": {"description": "rag"}}}
            }
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
    notify = {"paths": {"/webhooks/brevo": {"post": {"responses": {"200": {}}}}}}
    merged = merge_public_api(own, {"rag": rag, "notify": notify})
    paths = merged["paths"]
    assert sorted(paths["/v1/me"]["get"]["responses"]) == ["200", "401", "429"]
    search = paths["/v1/search"]["post"]["responses"]
    assert sorted(search) == ["400", "401", "408", "413", "422", "429", "503", "504"]
    assert search["422"] == {"description": "rag"}, "the service's own answer is kept"
    assert search["429"]["headers"]["Retry-After"]["required"] is True
    assert search["503"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    webhook = paths["/webhooks/brevo"]["post"]["responses"]
    assert sorted(webhook) == ["200", "400", "429", "503", "504"], "no token at the gateway"
    assert merged["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
