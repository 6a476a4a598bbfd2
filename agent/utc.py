"""UTC time stamps as files and messages show them (ISO 8601 with ``Z``)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_iso(timestamp: float) -> str:
    """Seconds since the epoch to UTC ISO 8601 with milliseconds and ``Z``."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_compact(timestamp: float) -> str:
    """Seconds since the epoch to a sortable, file-safe UTC stamp: ``20261122T020631.123Z``."""
    dt = datetime.fromtimestamp(timestamp, UTC)
    return dt.strftime("%Y%m%dT%H%M%S.") + f"{dt.microsecond // 1000:03d}Z"
