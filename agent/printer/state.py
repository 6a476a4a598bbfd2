"""What the printer is doing, as the alerts need it: a status and one reading of the job."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent.utc import utc_compact


class PrintStatus(StrEnum):
    """What the printer is doing, reduced to what alerting needs."""

    PRINTING = "printing"
    PAUSED = "paused"
    IDLE = "idle"
    """No job running: operational, finished, cancelled, errored, uploading to SD, or disconnected."""
    UNKNOWN = "unknown"
    """The host did not answer (switched off, rebooting, wrong URL or key)."""


@dataclass(frozen=True, slots=True)
class PrintState:
    """One reading of the printer's job.

    ``elapsed_s`` is the time into the job as the printer counts it (OctoPrint ``printTime``,
    Moonraker ``print_duration``): it excludes pauses, so it never goes backwards within one
    print. ``started_at`` (epoch seconds) is only set where it is stable for the whole print
    (Moonraker: now minus ``total_duration``); OctoPrint's API offers nothing as stable, so it
    is None there. ``raw_state`` is the host's own word for the state (or why it is unknown).
    """

    status: PrintStatus
    job_name: str | None = None
    elapsed_s: float | None = None
    started_at: float | None = None
    raw_state: str = ""
    checked_at: float = 0.0

    @classmethod
    def read(
        cls,
        status: PrintStatus,
        raw_state: str,
        checked_at: float,
        name: Any,
        elapsed: Any,
        started_at: float | None = None,
    ) -> PrintState:
        """A reading from a host's answer: ``name`` and ``elapsed`` (seconds) as the JSON had them
        (a missing or empty name and a non-number elapsed time read as None)."""
        return cls(
            status=status,
            job_name=str(name) if name else None,
            elapsed_s=float(elapsed) if isinstance(elapsed, int | float) else None,
            started_at=started_at,
            raw_state=raw_state,
            checked_at=checked_at,
        )

    @classmethod
    def unknown(cls, checked_at: float, why: str = "") -> PrintState:
        """The host could not be asked."""
        return cls(PrintStatus.UNKNOWN, raw_state=why, checked_at=checked_at)

    @classmethod
    def untracked(cls, checked_at: float = 0.0) -> PrintState:
        """No printer integration: always 'printing' one job without a name."""
        return cls(PrintStatus.PRINTING, raw_state="no printer configured", checked_at=checked_at)

    @property
    def print_id(self) -> str | None:
        """A readable identity: the job name plus its start time when known."""
        if self.job_name is None:
            return None
        if self.started_at is None:
            return self.job_name
        return f"{self.job_name}@{utc_compact(self.started_at)}"
