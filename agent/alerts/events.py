"""Alert levels, samples and events, and the JSON an event is published as."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from agent.utc import utc_iso

log = logging.getLogger(__name__)


class AlertLevel(StrEnum):
    """Where the smoothed signal stands (with hysteresis)."""

    OK = "ok"
    WARN = "warn"
    ACT = "act"


LEVEL_RANK = {AlertLevel.OK: 0, AlertLevel.WARN: 1, AlertLevel.ACT: 2}

EventKind = Literal["warn", "act", "clear"]


@dataclass(frozen=True, slots=True)
class Sample:
    """What the monitor made of one counted frame (for score curves and replay)."""

    at: float
    frame_id: str | None
    score: float
    smoothed: float
    short_mean: float
    long_mean: float
    baseline: float
    signal: float
    warn_level: float
    act_level: float
    level: AlertLevel
    in_grace: bool


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A ``warn``, ``act`` or ``clear`` decision and everything needed to explain it.

    ``action`` is ``pause`` on an ``act`` when the settings ask for it, else ``none``.
    ``history`` holds the recent samples as ``(epoch s, score, smoothed)``.
    """

    kind: EventKind
    at: float
    reason: str
    print_name: str | None
    frame_id: str | None
    score: float
    smoothed: float
    signal: float
    warn_level: float
    act_level: float
    short_mean: float
    long_mean: float
    baseline: float
    action: Literal["none", "pause"]
    alerts_this_print: int
    max_alerts_per_print: int
    history: tuple[tuple[float, float, float], ...] = ()

    @property
    def active(self) -> bool:
        """True for warn and act (the Home Assistant binary sensor is on), False for clear."""
        return self.kind != "clear"


def log_event(event: AlertEvent) -> None:
    if event.kind == "clear":
        log.info("alert cleared for print %r: %s", event.print_name, event.reason)
    else:
        log.warning(
            "ALERT %s for %s (frame %s, alert %d/%d): %s",
            event.kind,
            f"print {event.print_name!r}" if event.print_name else "the camera's print",
            event.frame_id,
            event.alerts_this_print,
            event.max_alerts_per_print,
            event.reason,
        )


def _r(value: float) -> float:
    return round(float(value), 4)


def alert_payload(event: AlertEvent, *, device_id: str | None = None) -> dict[str, Any]:
    """The JSON body for ``<prefix>/<device>/alerts``: level, scores, history, snapshot frame id.

    Keys match ``agent.mqtt.topics.alert_message`` (``device_id``, ``timestamp`` = the event's
    time, UTC ISO with Z); ``active`` is what the Home Assistant failure sensor shows."""
    payload: dict[str, Any] = {
        "level": event.kind,
        "active": event.active,
        "timestamp": utc_iso(event.at),
        "reason": event.reason,
        "action": event.action,
        "print": event.print_name,
        "frame_id": event.frame_id,
        "score": _r(event.score),
        "smoothed": _r(event.smoothed),
        "signal": _r(event.signal),
        "warn_level": _r(event.warn_level),
        "act_level": _r(event.act_level),
        "short_mean": _r(event.short_mean),
        "long_mean": _r(event.long_mean),
        "baseline": _r(event.baseline),
        "alerts_this_print": event.alerts_this_print,
        "max_alerts_per_print": event.max_alerts_per_print,
        "history": [
            {"timestamp": utc_iso(t), "score": _r(p), "smoothed": _r(e)} for t, p, e in event.history
        ],
    }
    if device_id is not None:
        payload["device_id"] = device_id
    return payload
