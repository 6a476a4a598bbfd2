"""The README stays true: its configuration reference is generated from the config models."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def test_readme_configuration_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "config_reference.py"), "--check", str(REPO / "README.md")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr + "\nrun: python scripts/update_readme.py"


def test_readme_starts_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    head = text[: text.index("## ")]
    assert ".venv/bin/edge-agent run" in head
    assert "./scripts/test.sh" in head
    assert "./scripts/test.sh" in (REPO / ".ci" / "run").read_text()
