"""Which receivers run on a review root: a heartbeat file per receiver, on the shared storage.

Each running receiver rewrites ``<root>/.edge-agent-review/receivers/<client id>.json`` every few
seconds and deletes it on a clean stop. ``--close-batch`` reads them to decide whether a running
receiver will close the batch or whether it must close it itself. This is advice, not a lock:
the batch itself is only ever written under its device's lease lock, so a wrong guess (a clock
far off, a receiver killed a moment ago) costs a wait, never a damaged batch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from agent.fsutil import atomic_write_json
from agent.utc import utc_iso

FRESH_S = 30.0  # a heartbeat younger than this (by its file time) means the receiver runs


class Presence:
    """The heartbeat files in ``folder``; ``owner`` is this receiver's."""

    def __init__(self, folder: Path, owner: str) -> None:
        self.folder = folder
        self.owner = owner
        folder.mkdir(parents=True, exist_ok=True)

    def beat(self, now: float | None = None) -> None:
        """Say this receiver runs."""
        now = time.time() if now is None else now
        body = {"owner": self.owner, "pid": os.getpid(), "updated_at": utc_iso(now)}
        atomic_write_json(self.folder / f"{self.owner}.json", body, fsync=False)

    def others_or_self_running(self, now: float | None = None) -> bool:
        """True when any receiver's heartbeat is younger than ``FRESH_S``."""
        now = time.time() if now is None else now
        try:
            with os.scandir(self.folder) as entries:
                times = [e.stat().st_mtime for e in entries if e.name.endswith(".json")]
        except FileNotFoundError:
            return False
        return any(abs(now - t) < FRESH_S for t in times)

    def leave(self) -> None:
        """Remove this receiver's heartbeat (on a clean stop)."""
        (self.folder / f"{self.owner}.json").unlink(missing_ok=True)
