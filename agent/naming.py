"""File-safe names: what may appear in a file name, a topic level and a frame id."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, max_len: int = 120) -> str:
    """``text`` reduced to ``[A-Za-z0-9._-]`` (other runs become ``_``), no leading dot or dash
    (hidden files; options to shell commands), at most ``max_len`` characters; safe as a file
    name and an MQTT topic level."""
    cleaned = _UNSAFE.sub("_", text).lstrip(".-")[:max_len]
    return cleaned or "_"
