"""Errors as Supabase Auth answers them (supabase/auth ``internal/api/errors.go``)."""

from __future__ import annotations

from typing import Any

#: Clients send this header; from this version on, errors are ``{"code", "message"}``.
API_VERSION_HEADER = "X-Supabase-Api-Version"
API_VERSION_2024_01_01 = "2024-01-01"


class AuthApiError(Exception):
    """An answer other than success: ``status``, Supabase Auth's ``code`` (``""`` when it has
    none), its message, and members of its own (``weak_password``)."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def body(self, api_version: str | None) -> dict[str, Any]:
        """``{"code", "message"}`` for clients of API version 2024-01-01 or later, else the
        older ``{"code": <status>, "error_code", "msg"}``."""
        code = self.code or ("unexpected_failure" if self.status >= 500 else "unknown")
        if api_version is not None and api_version >= API_VERSION_2024_01_01:
            return {"code": code, "message": self.message, **self.extra}
        return {"code": self.status, "error_code": code, "msg": self.message, **self.extra}
