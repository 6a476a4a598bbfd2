"""The free-space floor: below ``min_free_mb`` free on the disk holding the frames, nothing is kept
(detection, alerts and publishing go on)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

_MB = 1024 * 1024
CHECK_INTERVAL_S = 1.0  # free space is read at most this often while it is above the floor


class FreeSpaceFloor:
    """Answers "is the disk too full to keep frames?" cheaply enough to ask for every kept frame."""

    def __init__(self, folder: Path, min_free_mb: float) -> None:
        self.folder = folder
        self.min_free_mb = min_free_mb
        self.low = False
        self._checked = -CHECK_INTERVAL_S

    def is_low(self) -> bool:
        """True while free space is below the floor (re-read at most every second while above it,
        at every call while below it, so keeping resumes as soon as space is freed)."""
        if self.min_free_mb <= 0:
            return False
        now = time.monotonic()
        if now - self._checked < CHECK_INTERVAL_S and not self.low:
            return False
        self._checked = now
        try:
            free = shutil.disk_usage(self.folder).free
        except OSError as exc:  # the folder vanished or the disk went away: keep the last answer
            log.warning("harvest: cannot read free space of %s: %s", self.folder, exc)
            return self.low
        low = free < self.min_free_mb * _MB
        if low != self.low:
            if low:
                log.warning(
                    "harvest: only %.0f MB free on the disk holding %s (floor min_free_mb=%.0f): "
                    "not keeping frames until space is freed; detection and alerts go on",
                    free / _MB,
                    self.folder,
                    self.min_free_mb,
                )
            else:
                log.info("harvest: %.0f MB free again; keeping frames", free / _MB)
            self.low = low
        return low
