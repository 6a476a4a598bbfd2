"""View events: the camera stopped seeing the print (``view_changed``, ``obstructed``) and saw it
again (``view_restored``), one event per stretch, and the JSON they are published as.

``ViewTracker`` turns the scene check's per-sample verdicts into events: a stretch of
``event_after_samples`` samples in a row that are not judged fine is reported once, as the kind of
its latest verdict; when a sample is fine again after a reported stretch, ``view_restored`` says
how long it lasted. A stretch shorter than that (a hand passing by) is never reported: its samples
are simply left out of the smoothing. These events never pause anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from agent.alerts.scene import SceneVerdict
from agent.utc import utc_iso

log = logging.getLogger(__name__)

ViewEventKind = Literal["view_changed", "obstructed", "view_restored"]


@dataclass(frozen=True, slots=True)
class ViewEvent:
    """The camera's view of the print changed (``view_changed``), is blocked (``obstructed``) or is
    back (``view_restored``). ``samples`` is how many samples in a row were not fine, ``since`` when
    the stretch began (epoch seconds); the shares are those of the latest verdict."""

    kind: ViewEventKind
    at: float
    since: float
    samples: int
    reason: str
    print_name: str | None
    frame_id: str | None
    changed_share: float
    foreign_share: float
    hidden_share: float

    @property
    def blocked(self) -> bool:
        """True while the view is not back (``view_changed`` and ``obstructed``)."""
        return self.kind != "view_restored"


def view_payload(event: ViewEvent, *, device_id: str | None = None) -> dict[str, Any]:
    """The JSON for the ``alerts`` topic (``level`` is the event's kind; no ``active``, so the failure
    sensor is left alone) and, retained, for the ``view`` topic (``blocked``, the Home Assistant
    "Camera view" problem sensor)."""
    payload: dict[str, Any] = {
        "level": event.kind,
        "blocked": event.blocked,
        "timestamp": utc_iso(event.at),
        "since": utc_iso(event.since),
        "samples": event.samples,
        "reason": event.reason,
        "action": "none",
        "print": event.print_name,
        "frame_id": event.frame_id,
        "changed_share": round(event.changed_share, 4),
        "foreign_share": round(event.foreign_share, 4),
        "hidden_share": round(event.hidden_share, 4),
    }
    if device_id is not None:
        payload["device_id"] = device_id
    return payload


class ViewTracker:
    """Counts the samples in a row that the scene check did not find fine; reports stretches."""

    def __init__(self, event_after_samples: int) -> None:
        self.event_after_samples = event_after_samples
        self.blocked_samples = 0
        self.counts = {"view_changed": 0, "obstructed": 0, "view_restored": 0, "samples_left_out": 0}
        self._since: float | None = None
        self._reported = False
        self.view = "ok"

    def update(
        self, verdict: SceneVerdict, now: float, frame_id: str | None, print_name: str | None
    ) -> list[ViewEvent]:
        """Take one sample's verdict at ``now`` (epoch s); the events it completes (usually none)."""
        self.view = verdict.view
        if verdict.counts:
            return self._restored(verdict, now, frame_id, print_name, "the camera sees the print again")
        self.counts["samples_left_out"] += 1
        self.blocked_samples += 1
        if self._since is None:
            self._since = now
        if self._reported or self.blocked_samples < self.event_after_samples:
            return []
        self._reported = True
        kind: ViewEventKind = "view_changed" if verdict.view == "view_changed" else "obstructed"
        return [self._event(kind, verdict, now, frame_id, print_name, verdict.reason)]

    def reset(self, now: float, print_name: str | None, why: str) -> list[ViewEvent]:
        """Start over (a new print, a resume); ``view_restored`` when a stretch had been reported."""
        self.view = "ok"
        return self._restored(SceneVerdict("learning"), now, None, print_name, why)

    def _restored(
        self, verdict: SceneVerdict, now: float, frame_id: str | None, print_name: str | None, why: str
    ) -> list[ViewEvent]:
        events = []
        if self._reported:
            events.append(self._event("view_restored", verdict, now, frame_id, print_name, why))
        self.blocked_samples, self._since, self._reported = 0, None, False
        return events

    def _event(
        self,
        kind: ViewEventKind,
        verdict: SceneVerdict,
        now: float,
        frame_id: str | None,
        print_name: str | None,
        reason: str,
    ) -> ViewEvent:
        self.counts[kind] += 1
        event = ViewEvent(
            kind=kind,
            at=now,
            since=self._since if self._since is not None else now,
            samples=self.blocked_samples,
            reason=reason,
            print_name=print_name,
            frame_id=frame_id,
            changed_share=verdict.changed_share,
            foreign_share=verdict.foreign_share,
            hidden_share=verdict.hidden_share,
        )
        if kind == "view_restored":
            log.info("camera view restored after %d samples: %s", event.samples, reason)
        else:
            log.warning(
                "VIEW %s for %d samples (frame %s): %s; those frames are left out of the failure score, "
                "and nothing is paused",
                kind,
                event.samples,
                frame_id,
                reason,
            )
        return event
