"""When the pipeline counts as stuck, for the systemd watchdog.

The pipeline progresses only while frames move. Each part that holds work reports since when it
has held it (``Part.busy_since``, monotonic seconds; None while it waits for work): an interpreter
with a frame in inference, or building and warming a replacement detector (the time runs on from
the frame that hung, so a replacement that hangs too never resets it); the output stages with a
result, or in their periodic work; results waiting for an earlier frame. The threads that read the
source beat their ``Heartbeats`` (``agent.liveness``) on every loop turn and while they wait on
purpose, so a read or decode that never returns shows as a thread that stopped beating, while a
camera sampled every ``interval_s`` is idle, not stuck.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from agent.liveness import Heartbeats


@dataclass(frozen=True, slots=True)
class Part:
    """A part of the pipeline and since when (monotonic s) it has held work; None: it is idle."""

    name: str
    busy_since: float | None


def stalled(
    parts: Iterable[Part], heartbeats: Heartbeats | None, limit_s: float, now: float | None = None
) -> list[str]:
    """What has been stuck for ``limit_s`` seconds or more, e.g. ``["interpreter 0 (41 s)"]``:
    parts busy that long, and the source's reading thread that has not beaten for that long."""
    now = time.monotonic() if now is None else now
    stuck = [
        f"{part.name} ({now - part.busy_since:.0f} s)"
        for part in parts
        if part.busy_since is not None and now - part.busy_since >= limit_s
    ]
    stalest = heartbeats.stalest() if heartbeats is not None else None
    if stalest is not None and stalest[1] >= limit_s:
        stuck.append(f"source thread {stalest[0]} ({stalest[1]:.0f} s in one read)")
    return stuck
