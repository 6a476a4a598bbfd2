#!/usr/bin/env python3
"""Rewrite the configuration reference block in docs/configuration.md from the config models."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from config_reference import END, START, reference

readme = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
text = readme.read_text(encoding="utf-8")
head, rest = text.split(START, 1)
_, tail = rest.split(END, 1)
readme.write_text(f"{head}{START}\n{reference().strip()}\n{END}{tail}", encoding="utf-8")
print(f"updated {readme}")
