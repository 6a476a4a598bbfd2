"""What the alert monitor remembers between samples and across restarts (saved as JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from agent.alerts.events import AlertLevel
from agent.printer import PrintStatus

STATE_VERSION = 1


@dataclass
class MonitorState:
    """Everything the monitor remembers; saved as JSON (``version`` 1)."""

    version: int = STATE_VERSION
    saved_at: float = 0.0
    # The print being watched.
    has_print: bool = False
    print_ended: bool = True
    print_name: str | None = None
    print_started_at: float | None = None
    print_elapsed_s: float | None = None
    print_first_seen_at: float | None = None
    print_status: str = PrintStatus.IDLE.value
    # Smoothing. The long mean belongs to the printer and survives prints.
    ewm: float = 0.0
    short_mean: float = 0.0
    short_count: int = 0
    long_mean: float = 0.0
    long_count: int = 0
    samples_this_print: int = 0
    grace_left: int = 0
    baseline: float = 0.0
    baseline_scores: list[float] | None = None
    # Alerting.
    level: str = AlertLevel.OK.value
    notified: str = AlertLevel.OK.value
    alerts_this_print: int = 0
    last_alert_at: float | None = None
    last_sample_at: float | None = None
    cap_logged: bool = False
    history: list[list[float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> MonitorState:
        """Parse a saved state; raises ``ValueError`` when it is not one this version wrote."""
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(f"not an alert state of version {STATE_VERSION}")
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in known})
        AlertLevel(state.level)
        AlertLevel(state.notified)
        PrintStatus(state.print_status)
        return state
