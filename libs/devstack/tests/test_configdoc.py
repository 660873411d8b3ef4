"""The README's configuration table lists every variable the services read."""

from __future__ import annotations

from pathlib import Path

from xtyl_devstack import configdoc

README = Path(__file__).resolve().parents[3] / "README.md"


def test_every_variable_has_a_meaning() -> None:
    missing = sorted(configdoc.variables() - configdoc.DESCRIPTIONS.keys())
    assert missing == [], f"add these to xtyl_devstack.configdoc.DESCRIPTIONS: {missing}"


def test_readme_table_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert configdoc.inject(text) == text, (
        "the README's configuration table is stale: run"
        " `uv run python -m xtyl_devstack.configdoc --write README.md`"
    )
