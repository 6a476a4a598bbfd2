"""What the alert monitor remembers between samples and across restarts, and the file it is saved in."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from agent.alerts.events import AlertLevel
from agent.fsutil import atomic_write_json
from agent.printer.state import PrintStatus

log = logging.getLogger(__name__)

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
    # The pause of the print's latest act alert: never asked for twice, also across a restart.
    pause_episode: int = 0  # alerts_this_print when the act that asked for it fired (0: none yet)
    pause_outcome: str = ""  # "pending" until the printer reports paused ("landed") or the print ends
    pause_requested_at: float | None = None
    pause_requests: int = 0
    pause_seconds: float | None = None

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


class StateFile:
    """Where the monitor's state is saved (atomically; fsync only for what matters after a power cut)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._failed = False
        self.saved_monotonic = time.monotonic()

    def load(self) -> MonitorState:
        """The saved state, or a clean one when there is none or it cannot be read."""
        if not self.path.exists():
            return MonitorState()
        try:
            state = MonitorState.from_json(json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("alert state %s unreadable (%s): starting from a clean state", self.path, exc)
            return MonitorState()
        if state.has_print and not state.print_ended:
            log.info(
                "restored alert state for print %r (%d samples, level %s, %d alerts sent)",
                state.print_name,
                state.samples_this_print,
                state.level,
                state.alerts_this_print,
            )
        return state

    def save(self, state: MonitorState, now: float, *, durable: bool) -> bool:
        """Write ``state`` (``saved_at`` = ``now``); fsync when ``durable`` (events, print changes) so a
        sample every 10 s does not wear out an SD card. False (logged once) when it cannot be written."""
        state.saved_at = now
        self.saved_monotonic = time.monotonic()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, state.to_json(), indent=None, fsync=durable)
        except OSError as exc:
            if not self._failed:
                log.error(
                    "cannot save alert state to %s (%s): a restart will start from a clean state",
                    self.path,
                    exc,
                )
                self._failed = True
            return False
        self._failed = False
        return True
