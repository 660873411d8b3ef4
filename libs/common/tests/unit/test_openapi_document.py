"""Every service's OpenAPI document says what it answers: problem details for errors, closed
request bodies where unknown members are refused, and an ``Allow`` naming every method."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.testing import TestClient

from xtyl_common.auth import UserPrincipal
from xtyl_common.identity import USER
from xtyl_common.web import build_service_app


class NoteIn(msgspec.Struct, forbid_unknown_fields=True):
    text: str


class OpenNoteIn(msgspec.Struct):
    text: str


class NotesController(Controller):
    path = "/v1/notes"
    dependencies = USER

    @post("/", problems=(409,))
    async def create(
        self, user: NamedDependency[UserPrincipal], data: JSONBody[NoteIn]
    ) -> None: ...

    @get("/")
    async def list_notes(
        self, user: NamedDependency[UserPrincipal], limit: FromQuery[int] = 10
    ) -> list[str]:
        return []

    @delete("/{note_id:uuid}")
    async def delete_note(
        self, user: NamedDependency[UserPrincipal], note_id: FromPath[uuid.UUID]
    ) -> None: ...

    @get("/{note_id:uuid}")
    async def get_note(
        self, user: NamedDependency[UserPrincipal], note_id: FromPath[uuid.UUID]
    ) -> str:
        return ""

    @post("/open", include_in_schema=True)
    async def create_open(self, data: JSONBody[OpenNoteIn]) -> None: ...


def document() -> dict[str, Any]:
    app = build_service_app(title="notes", version="1", route_handlers=[NotesController])
    with TestClient(app) as client:
        doc: dict[str, Any] = client.get("/schema/openapi.json").json()
    return doc


def statuses(doc: dict[str, Any], path: str, method: str) -> list[str]:
    return sorted(doc["paths"][path][method]["responses"])


def test_each_operation_documents_the_problems_it_can_answer() -> None:
    doc = document()
    assert statuses(doc, "/v1/notes", "post") == [
        "201", "400", "401", "409", "413", "422", "503", "504"
    ]  # fmt: skip
    assert statuses(doc, "/v1/notes", "get") == ["200", "401", "422", "503", "504"]
    assert statuses(doc, "/v1/notes/{note_id}", "get") == ["200", "401", "404", "503", "504"]
    assert statuses(doc, "/v1/notes/open", "post") == ["201", "400", "413", "422", "503", "504"]
    problem = doc["paths"]["/v1/notes"]["post"]["responses"]["422"]["content"]
    assert problem == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    assert doc["components"]["schemas"]["Problem"]["required"] == [
        "type",
        "title",
        "status",
        "code",
    ]


def test_token_routes_say_they_take_a_bearer_token() -> None:
    doc = document()
    assert doc["paths"]["/v1/notes"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/v1/notes/open"]["post"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_bodies_that_refuse_unknown_members_say_so() -> None:
    schemas = document()["components"]["schemas"]
    assert schemas["NoteIn"]["additionalProperties"] is False
    assert "additionalProperties" not in schemas["OpenNoteIn"]


def test_options_allow_names_every_method_of_the_path() -> None:
    app = build_service_app(title="notes", version="1", route_handlers=[NotesController])
    with TestClient(app) as client:
        listing = client.options("/v1/notes")
        one = client.options(f"/v1/notes/{uuid.uuid4()}")
    assert listing.status_code == 204
    assert listing.headers["allow"] == "GET, OPTIONS, POST"
    assert one.headers["allow"] == "DELETE, GET, OPTIONS"
