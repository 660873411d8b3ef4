"""Fixtures for tests that start a stack of their own in a subprocess."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from xtyl_devstack.pytest_plugin import ENV_INFO, ENV_TMPDIR


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A temp dir the ``xtyl-pg`` account can enter (pytest's own tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="xtyl-devstack-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def child_env(public_tmp: Path) -> dict[str, str]:
    """Environment for a child that must start a stack of its own, with its dirs in public_tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.pop(ENV_INFO, None)
    env[ENV_TMPDIR] = str(public_tmp)
    return env
