"""Shared test fixtures: where ../shared is, and small helpers every test file uses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGE_AGENT_SHARED", REPO.parent / "shared"))
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repository; tests that need it skip when it is absent."""
    if not (SHARED / "models").is_dir():
        pytest.skip(
            f"needs the reference material in {SHARED} (../shared beside the repository), absent here"
        )
    return SHARED


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The project's own test fixtures (tests/fixtures)."""
    return FIXTURES
