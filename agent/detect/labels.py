"""Label names for a model, from whichever form the model's author shipped.

Supported: a plain file with one label per line; a label map whose first line is a
background entry (``background``, ``???``: then class id ``i`` is line ``i + 1``); AutoML /
Model Maker ``dict.txt`` (also found inside the model's appended zip, where some exporters
wrote Python byte literals such as ``b'nozzle'``); Ultralytics metadata embedded in the
model (``metadata.json``, or ``temp_meta.txt`` holding a Python dict in older releases).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from agent.errors import ConfigError

BACKGROUND_NAMES = {"background", "???", "__background__", "bg"}
_BYTES_LITERAL = re.compile(r"""^b(['"])(.*)\1$""")


def clean_label(line: str) -> str:
    """One label line without surrounding blanks, a leading numeric id or a ``b'...'`` wrapper."""
    text = line.strip()
    match = _BYTES_LITERAL.match(text)
    if match:
        text = match.group(2)
    parts = text.split(maxsplit=1)
    if len(parts) == 2 and parts[0].isdigit():  # "0 person" style maps
        text = parts[1].strip()
    return text


def parse_label_lines(text: str) -> tuple[list[str], int]:
    """Label lines from one-per-line text, and the guessed label offset: 1 when line 0 is a
    background entry (then class id ``i`` is line ``i + 1``), else 0."""
    lines = [clean_label(line) for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    offset = 1 if lines and lines[0].lower() in BACKGROUND_NAMES else 0
    return lines, offset


def read_label_file(path: Path) -> tuple[list[str], int]:
    """``parse_label_lines`` on a file; a missing or unreadable file is a ``ConfigError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read labels file {path}: {exc.strerror}; check detector.labels") from None
    labels, offset = parse_label_lines(text)
    if len(labels) <= offset:
        raise ConfigError(f"labels file {path} holds no labels; write one label per line")
    return labels, offset


def _names_from_mapping(names: object) -> list[str] | None:
    if isinstance(names, dict):
        try:
            items = sorted((int(k), str(v)) for k, v in names.items())
        except (TypeError, ValueError):
            return None
        if [k for k, _ in items] != list(range(len(items))):
            return None
        return [v for _, v in items]
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def labels_from_embedded(files: dict[str, bytes]) -> tuple[list[str], int] | None:
    """Labels from files appended to the model (Ultralytics metadata or an AutoML dict.txt)."""
    for name, raw in files.items():
        base = name.rsplit("/", 1)[-1]
        text = raw.decode("utf-8", "replace")
        if base == "metadata.json":
            try:
                names = _names_from_mapping(json.loads(text).get("names"))
            except (json.JSONDecodeError, AttributeError):
                names = None
            if names:
                return names, 0
        elif base == "temp_meta.txt":
            try:
                meta = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                continue
            names = _names_from_mapping(meta.get("names")) if isinstance(meta, dict) else None
            if names:
                return names, 0
    for name, raw in files.items():
        if name.rsplit("/", 1)[-1] in ("dict.txt", "labels.txt", "labelmap.txt"):
            labels, offset = parse_label_lines(raw.decode("utf-8", "replace"))
            if len(labels) > offset:
                return labels, offset
    return None


def find_sidecar_labels(model_path: Path) -> Path | None:
    """A labels file shipped beside the model: ``<stem>.txt``, ``<stem>_labels.txt``,
    ``labels.txt``, ``dict.txt``, ``labelmap.txt`` (first that exists)."""
    folder, stem = model_path.parent, model_path.stem
    for candidate in (f"{stem}.txt", f"{stem}_labels.txt", "labels.txt", "dict.txt", "labelmap.txt"):
        path = folder / candidate
        if path.is_file():
            return path
    return None
