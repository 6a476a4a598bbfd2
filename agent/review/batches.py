"""Batch folders: names, states and the files in them (no locking, no decisions: see ``store``).

A batch is ``<root>/<device>/<batch>/`` named after its opening time, ``YYYYMMDD-HHMMSS`` (UTC),
with ``-2``, ``-3``, ... for a second batch in the same second. Its state is given by marker
files: none (**open**), ``SEALED`` (takes no new frames) or ``CLOSED`` (complete, never touched
again).
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_DIR = ".edge-agent-review"
FRAMES_DIR = "frames"
ANNOTATIONS_DIR = "annotations"
VOTT_DIR = "vott"
SEALED = "SEALED"
CLOSED = "CLOSED"
CLOSE_REQUEST = "CLOSE"
BATCH_NAME = re.compile(r"\d{8}-\d{6}(?:-\d{1,4})?")


@dataclass(frozen=True)
class Batch:
    """One batch folder of a device; ``state`` is ``open``, ``sealed`` or ``closed``."""

    device: str
    name: str
    path: Path
    state: str

    @property
    def frames_dir(self) -> Path:
        """VoTT's source folder."""
        return self.path / FRAMES_DIR

    @property
    def annotations_dir(self) -> Path:
        """Validated annotations, one JSON per frame id."""
        return self.path / ANNOTATIONS_DIR

    @property
    def vott_dir(self) -> Path:
        """VoTT's target folder (written when the batch closes)."""
        return self.path / VOTT_DIR

    @property
    def project_name(self) -> str:
        """The VoTT project name, ``<device>-<batch>``."""
        return f"{self.device}-{self.name}"

    @property
    def project_file(self) -> Path:
        """The ``.vott`` file (exists once the batch is closed)."""
        return self.vott_dir / f"{self.project_name}.vott"

    def frame_file(self, frame_id: str) -> Path:
        """Where the frame's JPEG is stored."""
        return self.frames_dir / f"{frame_id}.jpg"

    def annotation_file(self, frame_id: str) -> Path:
        """Where the frame's annotation is stored."""
        return self.annotations_dir / f"{frame_id}.json"

    def frame_ids(self) -> set[str]:
        """Ids of the frames stored in this batch."""
        return stems(self.frames_dir, ".jpg")

    def annotation_ids(self) -> set[str]:
        """Ids of the frames whose annotation is stored in this batch."""
        return stems(self.annotations_dir, ".json")

    def with_state(self, state: str) -> Batch:
        """The same batch in another state."""
        return Batch(self.device, self.name, self.path, state)


@dataclass(frozen=True)
class CloseResult:
    """A batch that was just closed, with what its project holds."""

    batch: Batch
    frames: int
    assets: int
    frames_without_annotation: int
    annotations_without_frame: int

    def describe(self) -> str:
        """One line for logs and the terminal."""
        return (
            f"{self.batch.device}/{self.batch.name}: {self.frames} frame(s), {self.assets} asset(s), "
            f"{self.frames_without_annotation} frame(s) without annotation, "
            f"{self.annotations_without_frame} annotation(s) without frame -> {self.batch.project_file}"
        )


def stems(folder: Path, suffix: str) -> set[str]:
    """Names in ``folder`` ending in ``suffix`` without it (hidden and temporary files left out)."""
    try:
        with os.scandir(folder) as entries:
            return {
                e.name[: -len(suffix)]
                for e in entries
                if e.name.endswith(suffix) and not e.name.startswith(".") and e.is_file(follow_symlinks=False)
            }
    except FileNotFoundError:
        return set()


def batch_names(device_dir: Path) -> list[str]:
    """The batch folder names under a device folder, oldest first."""
    try:
        with os.scandir(device_dir) as entries:
            names = [
                e.name for e in entries if e.is_dir(follow_symlinks=False) and BATCH_NAME.fullmatch(e.name)
            ]
    except FileNotFoundError:
        return []
    return sorted(names, key=batch_sort_key)


def batch_sort_key(name: str) -> tuple[str, int]:
    """Opening time, then the number a second batch in the same second got (``-2``, ...)."""
    suffix = name[16:]
    return name[:15], int(suffix) if suffix.isdigit() else 1


def read_json(path: Path) -> Any:
    """A JSON file's content (raises OSError / ValueError)."""
    return json.loads(path.read_bytes().decode("utf-8"))


class ClosedBatches:
    """What this process knows of closed batches (they never change, so it is safe to cache):
    their names per device and, for the newest ``search_depth`` of a device, their frame ids."""

    def __init__(self, root: Path, search_depth: int = 20) -> None:
        self.root = root
        self.search_depth = search_depth
        self._names: dict[str, set[str]] = {}
        self._ids: dict[tuple[str, str], tuple[frozenset[str], frozenset[str]]] = {}
        self._lock = threading.Lock()  # several workers, each on other devices, share this cache

    def add(self, device: str, name: str) -> None:
        """Record a batch as closed."""
        with self._lock:
            self._names.setdefault(device, set()).add(name)

    def known(self, device: str, name: str) -> bool:
        """Whether the batch is closed, from the cache or its ``CLOSED`` marker."""
        if name in self._names.get(device, ()):
            return True
        if (self.root / device / name / CLOSED).exists():
            self.add(device, name)
            return True
        return False

    def newest_first(self, device: str) -> list[str]:
        """The device's closed batches known so far, newest first."""
        with self._lock:
            names = list(self._names.get(device, ()))
        return sorted(names, key=batch_sort_key, reverse=True)

    def find(self, device: str, frame_id: str) -> tuple[Batch | None, bool, bool]:
        """The newest of the last ``search_depth`` closed batches holding the frame or its annotation:
        ``(batch, has_frame, has_annotation)``."""
        recent = self.newest_first(device)[: self.search_depth]
        with self._lock:
            for key in [k for k in self._ids if k[0] == device and k[1] not in recent]:
                del self._ids[key]  # older batches are no longer searched
        for name in recent:
            batch = Batch(device, name, self.root / device / name, "closed")
            with self._lock:
                ids = self._ids.get((device, name))
            if ids is None:
                ids = (frozenset(batch.frame_ids()), frozenset(batch.annotation_ids()))
                with self._lock:
                    self._ids[(device, name)] = ids
            frames, annotations = ids
            if frame_id in frames or frame_id in annotations:
                return batch, frame_id in frames, frame_id in annotations
        return None, False, False
