"""Settings: frozen msgspec Structs read once from the environment.

Each field ``foo_bar`` is read from the variable ``FOO_BAR`` (or ``<PREFIX>FOO_BAR``). Values are
converted by msgspec (``"8000"`` -> ``8000``, ``"true"`` -> ``True``); an empty variable counts
as unset, so a field with a default keeps it and a required one is reported missing.

A missing or malformed variable raises :class:`SettingsError`, whose message is one line naming
the variable. Entry points call :func:`load_settings_or_exit`, which prints that line and exits
with status 2 (the usual "usage error" status), never a traceback.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import NoReturn, TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)

EXIT_CONFIG_ERROR = 2

_PATH_RE = re.compile(r"at `\$\.([A-Za-z0-9_]+)")
_MISSING_RE = re.compile(r"missing required field `([A-Za-z0-9_]+)`")


class SettingsError(Exception):
    """A setting is missing or malformed. ``str(error)`` is one line that names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class BaseSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """What every service process reads: where it listens and how it logs."""

    host: str = "0.0.0.0"  # noqa: S104 - containers listen on all interfaces
    port: int = 8000
    log_level: str = "info"
    #: ``None``: JSON when stderr is not a terminal, pretty console output when it is.
    log_json: bool | None = None
    #: ``local`` for the embedded stack, ``production`` otherwise; only changes defaults of docs.
    xtyl_env: str = "production"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError("must be a TCP port between 1 and 65535 (at `$.port`)")
        if self.log_level.lower() not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError(
                "must be one of debug, info, warning, error, critical (at `$.log_level`)"
            )


def env_name(field: str, prefix: str = "") -> str:
    return f"{prefix}{field}".upper()


def load_settings(cls: type[S], *, environ: Mapping[str, str] | None = None, prefix: str = "") -> S:
    """Build ``cls`` from the environment, or raise :class:`SettingsError`."""
    env = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    for field in msgspec.structs.fields(cls):
        value = env.get(env_name(field.name, prefix))
        if value is not None and value.strip() != "":
            raw[field.name] = value.strip()
    try:
        return msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise _to_settings_error(str(exc), prefix) from None


def _to_settings_error(message: str, prefix: str) -> SettingsError:
    missing = _MISSING_RE.search(message)
    if missing:
        return SettingsError(env_name(missing.group(1), prefix), "is required but not set")
    at = _PATH_RE.search(message)
    problem = message.split(" - at `", 1)[0].split(" (at `", 1)[0].strip()
    if at:
        if problem.startswith("is required"):  # a __post_init__ rule on a missing value
            return SettingsError(env_name(at.group(1), prefix), problem)
        return SettingsError(env_name(at.group(1), prefix), f"is malformed: {problem}")
    return SettingsError("configuration", problem)


def load_settings_or_exit(cls: type[S], *, program: str, prefix: str = "") -> S:
    """Load settings for an entry point; on error print one line and exit with status 2."""
    try:
        return load_settings(cls, prefix=prefix)
    except SettingsError as exc:
        exit_with_config_error(program, str(exc))


def exit_with_config_error(program: str, message: str) -> NoReturn:
    print(f"{program}: configuration error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG_ERROR)
