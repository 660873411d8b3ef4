"""The pieces every service's Litestar app is built from.

``build_service_app`` gives each service the same edge: request ids, access logs, problem
details for every error (RFC 9457, ``application/problem+json`` with a stable ``code``),
``/livez`` and ``/readyz``, and OpenAPI docs at ``/schema`` (Swagger UI at ``/schema/swagger``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import msgspec
import structlog
from litestar import Litestar, Request, Response
from litestar.background_tasks import BackgroundTask
from litestar.config.cors import CORSConfig
from litestar.datastructures import MutableScopeHeaders, State
from litestar.exceptions import HTTPException, ValidationException
from litestar.middleware import ASGIMiddleware
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.types import ASGIApp, ControllerRouterHandler, Message, Receive, Scope, Send
from redis import exceptions as redis_exceptions

from xtyl_common import errors
from xtyl_common.context import REQUEST_ID_HEADER, accept_request_id, set_request_id
from xtyl_common.health import READINESS_STATE_KEY, Readiness, health_handlers

log = structlog.stdlib.get_logger("xtyl.http")

_REQUEST_ID_HEADER_LOWER = REQUEST_ID_HEADER.lower().encode()
_QUIET_PATHS = frozenset({"/livez", "/readyz"})
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
    """Binds a request id (the caller's, when plain, else a new one) and logs each request."""

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

        try:
            await next_app(scope, receive, send_with_id)
        finally:
            path = caller_path(scope)
            if path not in _QUIET_PATHS:
                log.info(
                    "request_handled",
                    method=scope.get("method"),
                    path=path,
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
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


EXCEPTION_HANDLERS: dict[type[Exception] | int, Callable[..., Response[bytes]]] = {
    errors.XtylError: _handle_xtyl_error,
    HTTPException: _handle_http_exception,
    **{cls: _handle_dependency_down for cls, _ in _DEPENDENCY_DOWN},
    Exception: _handle_unexpected,
}


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
) -> Litestar:
    """A Litestar app with the shared edge; the service adds its routes and lifespan."""
    cors = (
        CORSConfig(
            allow_origins=list(cors_origins),
            allow_credentials=True,
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
        )
        if cors_origins
        else None
    )
    return Litestar(
        route_handlers=[*health_handlers(), *route_handlers],
        lifespan=list(lifespan),
        middleware=[RequestContextMiddleware()],
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
    )
