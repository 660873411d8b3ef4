"""Reading requests and hashing passwords, for the local Auth's routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import bcrypt
import msgspec
from aiohttp import web

from xtyl_devstack.auth.errors import AuthApiError

_BCRYPT_ROUNDS = 10
_json = msgspec.json.Decoder()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(_BCRYPT_ROUNDS)).decode()


def password_matches(password: str, encrypted: str | None) -> bool:
    if not encrypted:
        return False
    try:
        return bcrypt.checkpw(password.encode(), encrypted.encode())
    except ValueError:
        return False


async def read_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body: object = _json.decode(raw)
    except msgspec.DecodeError as exc:
        raise AuthApiError(
            400, "bad_json", f"Could not parse request body as JSON: {exc}"
        ) from None
    if not isinstance(body, dict):
        raise AuthApiError(400, "bad_json", "Request body must be a JSON object")
    return body  # pyright: ignore[reportUnknownVariableType]


def text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AuthApiError(400, "validation_failed", f"{name} must be a string")
    return value


def metadata(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AuthApiError(400, "validation_failed", f"{name} must be an object")
    return value  # pyright: ignore[reportUnknownVariableType]


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"
