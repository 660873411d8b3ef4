"""The pieces every service's Litestar app is built from.

``build_service_app`` gives each service the same edge: request ids, access logs, problem
details for every error (RFC 9457, ``application/problem+json`` with a stable ``code``),
``/livez``, ``/readyz``, ``/metrics`` (Prometheus, :mod:`xtyl_common.metrics`: every request
counted by route template), OpenAPI docs at ``/schema`` (Swagger UI at ``/schema/swagger``),
and 422 ``invalid_text`` for text Postgres cannot store (:mod:`xtyl_common.text`) in JSON
bodies, query and path parameters, checked before the handler runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from types import CellType
from typing import Any

import asyncpg
import msgspec
import structlog
from litestar import Litestar, Request, Response
from litestar.background_tasks import BackgroundTask
from litestar.config.cors import CORSConfig
from litestar.datastructures import MutableScopeHeaders, State
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, ControllerRouterHandler, Message, Receive, Scope, Send
from prometheus_client import Counter, Histogram
from redis import exceptions as redis_exceptions

from xtyl_common import errors, metrics
from xtyl_common.context import REQUEST_ID_HEADER, accept_request_id, set_request_id
from xtyl_common.health import READINESS_STATE_KEY, Readiness, health_handlers
from xtyl_common.openapi import ClosedStructSchemaPlugin, document_problems
from xtyl_common.text import NUL_ESCAPE, check_storable, invalid_text, refused_json_text
from xtyl_common.tracing import UNTRACED_PATHS, configure_tracing

log = structlog.stdlib.get_logger("xtyl.http")

_REQUEST_ID_HEADER_LOWER = REQUEST_ID_HEADER.lower().encode()
_QUIET_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
_problem_encoder = msgspec.json.Encoder()

_STATUS_CODES: dict[int, type[errors.XtylError]] = {
    400: errors.ClientError,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
    422: errors.InvalidInput,
    503: errors.Unavailable,
    504: errors.TimedOut,
}


def caller_path(scope: Scope) -> str:
    """The path the caller asked for. Litestar hands a mounted app only the part below its
    mount point in ``scope["path"]``; ``raw_path`` (as sent, percent-encoded) keeps all of it."""
    raw: bytes | None = scope.get("raw_path")
    if raw:
        return raw.decode("latin-1").partition("?")[0]
    return scope.get("root_path", "") + scope["path"]


class RequestContextMiddleware(ASGIMiddleware):
    """Binds a request id (the caller's, when plain, else a new one), logs each request and
    counts it (``xtyl_http_*``, by route template: :mod:`xtyl_common.metrics`)."""

    def __init__(self, service: str = "xtyl") -> None:
        self.service = service
        self.in_flight = metrics.HTTP_IN_FLIGHT.labels(service)
        #: the request counter and duration histogram of each (route, method, status) seen
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        candidate: str | None = None
        for name, value in scope["headers"]:
            if name == _REQUEST_ID_HEADER_LOWER:
                candidate = value.decode("latin-1")
                break
        request_id = accept_request_id(candidate)
        set_request_id(request_id)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        scope["state"]["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableScopeHeaders.from_message(message)
                headers[REQUEST_ID_HEADER] = request_id
            await send(message)

        self.in_flight.inc()
        try:
            await next_app(scope, receive, send_with_id)
        finally:
            self.in_flight.dec()
            elapsed = time.perf_counter() - started
            path = caller_path(scope)
            if path not in _QUIET_PATHS:
                log.info(
                    "request_handled",
                    method=scope.get("method"),
                    path=path,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
                method, route = metrics.http_labels(scope.get("method"), scope.get("path_template"))
                counted = self._series.get((route, method, status))
                if counted is None:  # bounded: route templates x methods x statuses
                    labels = (self.service, route, method, str(status))
                    counted = (
                        metrics.HTTP_REQUESTS.labels(*labels),
                        metrics.HTTP_DURATION.labels(*labels),
                    )
                    self._series[(route, method, status)] = counted
                counted[0].inc()
                counted[1].observe(elapsed)
            structlog.contextvars.unbind_contextvars("request_id", "user_id")


def problem_response(error: errors.XtylError, *, instance: str | None = None) -> Response[bytes]:
    return Response(
        content=_problem_encoder.encode(error.to_problem(instance=instance)),
        status_code=error.status,
        media_type=errors.PROBLEM_CONTENT_TYPE,
        headers=error.headers,
    )


def _handle_xtyl_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, errors.XtylError)
    if exc.status >= 500:
        log.warning("request_failed", code=exc.code, detail=exc.detail)
    response = problem_response(exc, instance=caller_path(request.scope))
    if exc.after_response is not None:
        response.background = BackgroundTask(exc.after_response)
    return response


def _handle_http_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ValidationException):
        extra: dict[str, Any] = {}
        if exc.extra:
            extra["errors"] = exc.extra
        error: errors.XtylError = errors.InvalidInput(exc.detail, extra=extra)
    else:
        cls = _STATUS_CODES.get(exc.status_code)
        if cls is None:
            cls = errors.ClientError if exc.status_code < 500 else errors.XtylError
        code = "malformed_json" if exc.detail.startswith("JSON is malformed") else None
        error = cls(exc.detail, code=code)
        error.status = exc.status_code  # type: ignore[misc]  # keep Litestar's precise status
        error.headers.update(exc.headers or {})
    return problem_response(error, instance=caller_path(request.scope))


#: Driver errors that mean "a dependency is down or slow", not "our code is wrong": they leave
#: as 503/504 problems naming the dependency, never as a 500.
_DEPENDENCY_DOWN: tuple[tuple[type[Exception], str], ...] = (
    (asyncpg.PostgresConnectionError, "postgres"),
    (asyncpg.CannotConnectNowError, "postgres"),
    (asyncpg.TooManyConnectionsError, "postgres"),
    (asyncpg.ConnectionDoesNotExistError, "postgres"),
    (asyncpg.InterfaceError, "postgres"),
    (redis_exceptions.ConnectionError, "redis"),
    (redis_exceptions.TimeoutError, "redis"),
    (ConnectionError, "a dependency"),
    (TimeoutError, "a dependency"),
)


_DRIVER_MODULES = (("asyncpg", "postgres"), ("redis", "redis"), ("aiobotocore", "s3"))


def _dependency_of(exc: Exception) -> str:
    """Which dependency failed: from the exception type, else from the driver that raised it
    (a refused connection is a plain OSError whichever client saw it)."""
    name = next((name for cls, name in _DEPENDENCY_DOWN if isinstance(exc, cls)), "a dependency")
    if name != "a dependency":
        return name
    tb = exc.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        for prefix, driver in _DRIVER_MODULES:
            if module == prefix or module.startswith(prefix + "."):
                name = driver  # keep walking: the innermost driver frame wins
        tb = tb.tb_next
    return name


def _handle_dependency_down(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    dependency = _dependency_of(exc)
    timed_out = isinstance(exc, (TimeoutError, redis_exceptions.TimeoutError))
    log.warning("dependency_failed", dependency=dependency, error_type=type(exc).__name__)
    code = dependency.replace("a dependency", "dependency").replace(" ", "_")
    error: errors.XtylError = (
        errors.TimedOut(f"{dependency} did not answer in time", code=f"{code}_timeout")
        if timed_out
        else errors.Unavailable(f"{dependency} is unavailable", code=f"{code}_unavailable")
    )
    return problem_response(error, instance=caller_path(request.scope))


def _handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled_error", path=caller_path(request.scope), error_type=type(exc).__name__)
    return problem_response(errors.XtylError(), instance=caller_path(request.scope))


def _handle_postgres_data_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """The net under :func:`refuse_unstorable_text`: Postgres refusing a NUL (22021 in text,
    22P05 in jsonb) or asyncpg unable to encode a lone surrogate is the caller's text, 422
    ``invalid_text``; the statement failed, so its transaction changed nothing. Any other data
    exception (22xxx) is our bug: 500."""
    refused_text = isinstance(
        exc,
        asyncpg.exceptions.CharacterNotInRepertoireError
        | asyncpg.exceptions.UntranslatableCharacterError,
    ) or isinstance(exc.__cause__, UnicodeEncodeError)
    if not refused_text:
        return _handle_unexpected(request, exc)
    log.warning("text_refused_by_postgres", sqlstate=getattr(exc, "sqlstate", None))
    error = invalid_text(None, source="request")
    return problem_response(error, instance=caller_path(request.scope))


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _takes_json_body(handler: HTTPRouteHandler) -> bool:
    """Whether Litestar decodes the request body as JSON for ``handler``'s ``data``."""
    data = handler.parsed_data_field
    if data is None or handler.resolve_data_dto() is not None:
        return False
    media_type = getattr(data.kwarg_definition, "media_type", RequestEncodingType.JSON)
    return media_type == RequestEncodingType.JSON


def _reads_own_body(handler: HTTPRouteHandler, method: str) -> bool:
    """A POST, PUT or PATCH whose handler takes no ``data`` or ``body``: it reads the body
    itself (an upload, a webhook)."""
    parameters = handler.parsed_fn_signature.parameters
    return method in _BODY_METHODS and "data" not in parameters and "body" not in parameters


async def refuse_unstorable_text(request: Request[Any, Any, Any]) -> None:
    """Every service's ``before_request``: 422 ``invalid_text`` when the JSON body, a query or a
    path parameter holds text Postgres cannot store, before anything is read or written.

    Costs next to nothing on a clean request: a NUL reaches a decoded JSON string only as
    ``\\u0000`` and a query parameter only as ``%00``, so only then are the values walked. The
    body is decoded here with ``request.json()``, which Litestar caches for the handler's
    ``data``. A handler that reads its body itself is left alone: answering before it would cut
    off a client still sending (the handler drains the body before its own errors), so it checks
    the text it uses with :mod:`xtyl_common.text` (storage's file name, notify's webhook).
    """
    handler = request.route_handler
    if _reads_own_body(handler, request.method):
        return
    if _takes_json_body(handler) and (body := await request.body()):
        try:
            decoded = await request.json()
        except (SerializationException, UnicodeDecodeError) as exc:
            refused = refused_json_text(body)  # never None for a UnicodeDecodeError
            if refused is not None:
                raise refused from exc
            return  # broken JSON: Litestar answers it as it always did
        if NUL_ESCAPE in body:
            check_storable(decoded)
    if b"%00" in request.scope.get("query_string", b""):
        for name, value in request.query_params.multi_items():
            check_storable({name: value}, source="query")
    for name, value in request.path_params.items():
        if isinstance(value, str):
            check_storable({name: value}, source="path")


EXCEPTION_HANDLERS: dict[type[Exception] | int, Callable[..., Response[bytes]]] = {
    errors.XtylError: _handle_xtyl_error,
    HTTPException: _handle_http_exception,
    asyncpg.DataError: _handle_postgres_data_error,
    **{cls: _handle_dependency_down for cls, _ in _DEPENDENCY_DOWN},
    Exception: _handle_unexpected,
}


def repair_options_allow(app: Litestar) -> None:
    """Make Litestar's automatic ``OPTIONS`` answer list every method of its path.

    Litestar 2 builds that handler with the path's first route and, when more handlers join the
    path, builds a new route but keeps the old handler, whose ``Allow`` still names the first
    methods only (``GET, OPTIONS`` on a path that also takes ``POST``; litestar-org/litestar#4169,
    fixed in Litestar 3). Point each such handler at the route it serves.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            closure: tuple[CellType, ...] | None = getattr(handler.fn, "__closure__", None)
            if handler.http_methods != {"OPTIONS"} or closure is None:
                continue
            for cell in closure:
                if isinstance(cell.cell_contents, HTTPRoute):
                    cell.cell_contents = route


def tracing_plugins(service: str) -> list[OpenTelemetryPlugin]:
    """Litestar's OpenTelemetry plugin (the maintained ASGI instrumentation) when tracing is on
    (:mod:`xtyl_common.tracing`), else nothing."""
    if not configure_tracing(service):
        return []
    return [OpenTelemetryPlugin(OpenTelemetryConfig(exclude=UNTRACED_PATHS))]


def build_service_app(
    *,
    title: str,
    version: str,
    route_handlers: Sequence[ControllerRouterHandler],
    lifespan: Sequence[Callable[[Litestar], AbstractAsyncContextManager[None]]] = (),
    description: str | None = None,
    cors_origins: Sequence[str] = (),
    debug: bool = False,
    request_max_body_size: int | None = 10 * 1024 * 1024,
    state: dict[str, Any] | None = None,
    service: str | None = None,
) -> Litestar:
    """A Litestar app with the shared edge; the service adds its routes and lifespan.
    ``service`` (gateway, storage, rag, notify) labels its metrics."""
    cors = (
        CORSConfig(
            allow_origins=list(cors_origins),
            allow_credentials=True,
            # Idempotency-Key: safe retries of POST /v1/files (storage), and their answer
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER, "Idempotency-Key"],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After", "Idempotent-Replayed"],
        )
        if cors_origins
        else None
    )
    app = Litestar(
        route_handlers=[*health_handlers(), *route_handlers],
        lifespan=list(lifespan),
        middleware=[RequestContextMiddleware(service or "unnamed")],
        # app-wide; a before_request set on a router, controller or handler would replace it
        before_request=refuse_unstorable_text,
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(
            title=title,
            version=version,
            description=description,
            path="/schema",
            render_plugins=[SwaggerRenderPlugin(path="/swagger"), JsonRenderPlugin()],
        ),
        cors_config=cors,
        logging_config=None,
        debug=debug,
        request_max_body_size=request_max_body_size,
        state=State({READINESS_STATE_KEY: Readiness(), **(state or {})}),
        plugins=[ClosedStructSchemaPlugin(), *tracing_plugins(service or "unnamed")],
        on_startup=[document_problems],
    )
    repair_options_allow(app)
    return app
