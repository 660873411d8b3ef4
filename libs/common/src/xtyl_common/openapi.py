"""Every service's OpenAPI document says what the service really answers.

Litestar documents a handler's success response, plus a ``400`` in its own JSON shape for
validation errors. The services answer every error as RFC 9457 problem details
(``application/problem+json``, :mod:`xtyl_common.errors`) and validation errors as ``422``, so
:func:`document_problems` (run once at start-up by ``build_service_app``) replaces Litestar's
error responses with the problem responses each operation can really produce, all with the
one ``Problem`` schema:

=====  ===========================================  =============================================
400    a body that is not JSON (``malformed_json``)  operations with a request body
401    a missing, invalid or expired token           operations that take ``user`` or ``service``
404    no such resource                              operations with path parameters
413    a body over the size limit                    operations with a request body
422    invalid parameters or body                    operations with query parameters or a body
503    a dependency is down                          every operation
504    a dependency did not answer in time           every operation
=====  ===========================================  =============================================

A handler lists what only it answers with ``problems=(409, 415)`` in its decorator (Litestar
keeps unknown keywords in ``opt``). Token-protected operations also say so with a ``bearer``
security requirement. :class:`ClosedStructSchemaPlugin` gives msgspec Structs that refuse
unknown fields ``additionalProperties: false``, so the document allows only what is accepted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.plugins import OpenAPISchemaPlugin
from litestar.routes import HTTPRoute
from litestar.typing import FieldDefinition

from xtyl_common.errors import PROBLEM_CONTENT_TYPE
from xtyl_common.identity import current_service, current_user

#: The ``opt`` key (a decorator keyword) listing the statuses only that handler answers.
PROBLEMS_OPT = "problems"
PROBLEM_SCHEMA_NAME = "Problem"
BEARER_SCHEME_NAME = "bearer"

#: What each problem status means, as the document tells a client.
PROBLEM_DESCRIPTIONS: dict[int, str] = {
    400: "Bad request: the body is not what the content type says (`malformed_json`, …)",
    401: "The bearer token is missing, malformed, expired or not for this API"
    " (`unauthorized`, `token_expired`, `token_invalid`, …)",
    403: "Forbidden",
    404: "No such resource, or not yours (`not_found`, `file_not_found`, …)",
    408: "The request body stalled (`request_timeout`)",
    409: "Conflict with the resource's state",
    413: "The body is larger than allowed (`payload_too_large`, `file_too_large`)",
    415: "This content type is not accepted",
    422: "Invalid parameters or body (`invalid_input` with `errors`, `invalid_text`,"
    " `invalid_cursor`, …)",
    429: "Rate limited (`rate_limited`): retry after `Retry-After` seconds",
    503: "A dependency is unavailable (`postgres_unavailable`, `upstream_unavailable`, …)",
    504: "A dependency did not answer in time (`upstream_timeout`, …)",
}

_ALWAYS = (503, 504)
_TOKEN_DEPENDENCIES = frozenset({current_user, current_service})


def problem_schema() -> Schema:
    """RFC 9457 problem details as every service writes them; more members may follow."""
    text = Schema(type=OpenAPIType.STRING)
    return Schema(
        type=OpenAPIType.OBJECT,
        title=PROBLEM_SCHEMA_NAME,
        description="RFC 9457 problem details. `code` is stable and machine-readable (the last"
        " segment of `type`); `instance` is the path asked for.",
        required=["type", "title", "status", "code"],
        properties={
            "type": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.URI),
            "title": text,
            "status": Schema(type=OpenAPIType.INTEGER),
            "code": text,
            "detail": text,
            "instance": text,
            "errors": Schema(
                type=OpenAPIType.ARRAY,
                description="422 `invalid_input`: what was wrong, where",
                items=Schema(
                    type=OpenAPIType.OBJECT,
                    properties={"message": text, "key": text, "source": text},
                ),
            ),
            "retry_after": Schema(type=OpenAPIType.INTEGER, minimum=1),
        },
    )


def problem_response(status: int) -> OpenAPIResponse:
    headers: dict[str, OpenAPIHeader | Reference] | None = None
    if status == 429:
        headers = {
            "Retry-After": OpenAPIHeader(
                schema=Schema(type=OpenAPIType.INTEGER, minimum=1),
                description="seconds to wait",
                required=True,
            )
        }
    elif status == 401:
        headers = {"WWW-Authenticate": OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING))}
    return OpenAPIResponse(
        description=PROBLEM_DESCRIPTIONS.get(status, "Problem details"),
        headers=headers,
        content={
            PROBLEM_CONTENT_TYPE: OpenAPIMediaType(
                schema=Reference(ref=f"#/components/schemas/{PROBLEM_SCHEMA_NAME}")
            )
        },
    )


def takes_token(handler: HTTPRouteHandler) -> bool:
    """Whether the handler verifies a user or service token (it takes ``user``/``service``)."""
    dependencies = handler.resolve_dependencies()
    return any(
        name in handler.parsed_fn_signature.parameters
        and getattr(dependencies.get(name), "dependency", None) in _TOKEN_DEPENDENCIES
        for name in ("user", "service")
    )


def problem_statuses(operation: Operation, path: str, handler: HTTPRouteHandler) -> list[int]:
    """The problem statuses ``operation`` (of ``handler``, at ``path``) can answer."""
    statuses: set[int] = {*_ALWAYS, *handler.opt.get(PROBLEMS_OPT, ())}
    if takes_token(handler):
        statuses.add(401)
    if "{" in path:
        statuses.add(404)
    # a path parameter of the wrong type does not match the route (404), others are 422
    checked = [p for p in operation.parameters or () if getattr(p, "param_in", None) != "path"]
    if checked or operation.request_body is not None:
        statuses.add(422)
    if operation.request_body is not None:
        statuses.update((400, 413))
    return sorted(statuses)


def _operations(
    app: Litestar, openapi: OpenAPI
) -> Iterator[tuple[str, Operation, HTTPRouteHandler]]:
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = route.path_format or "/"
        path_item = (openapi.paths or {}).get(path)
        if path_item is None:
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            for method in handler.http_methods:
                operation: Any = getattr(path_item, method.lower(), None)
                if isinstance(operation, Operation):
                    yield path, operation, handler


def document_problems(app: Litestar) -> None:
    """Give every operation of ``app``'s document its problem responses (see the module's
    table) in place of Litestar's, and token-protected ones a ``bearer`` requirement. Litestar
    builds the document once and serves it from then on, so this runs once, at start-up."""
    openapi = app.openapi_schema
    components = openapi.components
    components.schemas = {**(components.schemas or {}), PROBLEM_SCHEMA_NAME: problem_schema()}
    bearer_used = False
    for path, operation, handler in _operations(app, openapi):
        # a status the handler documents itself (``responses=``: an HTML page for a browser)
        # keeps its own description; the others are problem details
        own = {str(code) for code in (handler.responses or {})}
        responses = {
            code: response
            for code, response in (operation.responses or {}).items()
            if code[:1] not in {"4", "5"} or code in own
        }
        for status in problem_statuses(operation, path, handler):
            if str(status) not in own:
                responses[str(status)] = problem_response(status)
        operation.responses = responses
        if takes_token(handler):
            operation.security = [{BEARER_SCHEME_NAME: []}]
            bearer_used = True
    if bearer_used:
        components.security_schemes = {
            **(components.security_schemes or {}),
            BEARER_SCHEME_NAME: SecurityScheme(
                type="http",
                scheme="bearer",
                bearer_format="JWT",
                description="A Supabase access token (internal routes: a service token)",
            ),
        }


class ClosedStructSchemaPlugin(OpenAPISchemaPlugin):
    """msgspec Structs with ``forbid_unknown_fields`` refuse members they do not name (422):
    their schema says ``additionalProperties: false``. The schema itself is the one the next
    plugin for Structs (Litestar's own) makes; a Struct whose fields alone cannot say which
    combinations are accepted lists them in ``openapi_one_of: ClassVar[tuple[Schema, ...]]``."""

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        if field_definition.is_union or not field_definition.is_subclass_of(msgspec.Struct):
            return False
        info = msgspec.inspect.type_info(field_definition.type_)
        return isinstance(info, msgspec.inspect.StructType) and info.forbid_unknown_fields

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        plugins: list[Any] = list(schema_creator.plugins)
        for plugin in plugins[plugins.index(self) + 1 :]:
            if isinstance(plugin, OpenAPISchemaPlugin) and plugin.is_plugin_supported_field(
                field_definition
            ):
                schema = plugin.to_openapi_schema(field_definition, schema_creator)
                schema.additional_properties = False
                one_of: Sequence[Schema] | None = getattr(
                    field_definition.type_, "openapi_one_of", None
                )
                if one_of:
                    schema.one_of = list(one_of)
                return schema
        raise TypeError(f"no OpenAPI schema plugin for {field_definition.type_!r}")
