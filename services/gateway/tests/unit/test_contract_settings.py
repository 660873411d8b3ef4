"""The contract test's schemathesis settings reach exactly the operations they name: an entry
that filtered by path OR method once turned off every DELETE and every operation of /v1/me."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok

CONFIG = Path(__file__).parents[1] / "integration" / "schemathesis.toml"

OPERATIONS = {
    "/v1/me": ("get", "delete"),
    "/v1/me/export": ("get",),
    "/v1/files": ("get", "post"),
    "/v1/files/uploads": ("post",),
    "/v1/files/{file_id}": ("get", "delete"),
    "/v1/documents": ("get", "post"),
    "/v1/notifications": ("get",),
    "/v1/answer": ("post",),
}
DEFAULT_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


def expected_statuses() -> dict[str, list[str]]:
    """Operation label -> the statuses its positive_data_acceptance check accepts, for the
    operations the run tests."""
    config = SchemathesisConfig.from_path(str(CONFIG))
    paths: dict[str, Any] = {}
    for path, methods in OPERATIONS.items():
        parameters = (
            [{"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}]
            if "{" in path
            else []
        )
        paths[path] = {
            m: {"parameters": parameters, "responses": {"200": {"description": "ok"}}}
            for m in methods
        }
    raw = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": paths}
    schema = schemathesis.openapi.from_dict(raw, config=config)
    operations = config.projects.default.operations
    found: dict[str, list[str]] = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operation = result.ok()
        check = operations.get_for_operation(operation).checks.positive_data_acceptance
        found[operation.label] = [s.lower() for s in check.expected_statuses]
    return found


def test_each_entry_reaches_only_the_operations_it_names() -> None:
    found = expected_statuses()
    assert "DELETE /v1/me" not in found  # the one operation turned off
    assert set(found) == {
        f"{m.upper()} {p}" for p, methods in OPERATIONS.items() for m in methods
    } - {"DELETE /v1/me"}
    with_422 = [*DEFAULT_STATUSES[:6], "422", *DEFAULT_STATUSES[6:]]
    assert found["GET /v1/files"] == with_422
    assert found["GET /v1/notifications"] == with_422
    assert found["POST /v1/files"] == [*DEFAULT_STATUSES[:6], "413", "415", "422", "429", "5xx"]
    assert found["POST /v1/files/uploads"] == [*DEFAULT_STATUSES[:6], "413", "415", "429", "5xx"]
    for untouched in ("GET /v1/me", "DELETE /v1/files/{file_id}", "POST /v1/answer"):
        assert found[untouched] == DEFAULT_STATUSES, untouched
