"""The docs stay true: the configuration reference is generated from the config models; the README
starts with the two commands and stays short."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def test_configuration_reference_is_current() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "config_reference.py"),
            "--check",
            str(REPO / "docs" / "configuration.md"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr + "\nrun: python scripts/update_docs.py"


def test_readme_starts_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    head = text[: text.index("## ")]
    assert ".venv/bin/edge-agent run" in head
    assert "./scripts/test.sh" in head
    assert "./scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_readme_is_short_and_its_links_into_docs_exist() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    import re

    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / link).is_file(), link
