"""The VoTT stage: each kept frame's picture into the frames folder and its detections into the
VoTT project; frames the disk quota evicts come out of the project again.

Layout under ``output.dir`` (``D``)::

    D/frames/<frame id>.jpg          the kept frames (VoTT's source folder)
    D/vott/<project>.vott            the project, <asset id>-asset.json per frame with detections,
    D/vott/edge-agent-scores/        the detection scores VoTT has no field for, and the agent's records

A frame is stored as the source's own JPEG/PNG bytes when it had them, else encoded once as JPEG
(``agent.encode``); frames from a folder that already is the VoTT source folder (``edge-agent
label`` on one folder) are used in place. A frame whose asset the reviewer touched in VoTT is
left exactly as the reviewer saved it, picture and all.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.encode import EncodedImage, stored_image
from agent.flow import EventBus, Outputs, Stage
from agent.frames import Frame, FrameResult
from agent.harvest.decision import EvictionDone, FrameEvicted, KeepDecision
from agent.vott.writer import AssetWrite, VottProject, WriteOutcome

if TYPE_CHECKING:
    from agent.sources.resume import FileMark

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredFrame:
    """What the VoTT stage did with a frame: where its picture is (None when not kept), the bytes
    stored (None when the file was already there), the asset written, and every file the frame
    occupies (picture first, then its asset file and sidecar; what the disk quota counts)."""

    image_path: Path | None
    image: EncodedImage | None
    asset: AssetWrite | None
    files: tuple[Path, ...] = ()


NOT_STORED = StoredFrame(None, None, None)
_AGENT_ASSETS = (WriteOutcome.ADDED, WriteOutcome.UPDATED)


class VottStage(Stage):
    """Writes every kept frame and its detections into a ``VottProject``."""

    name = "vott"
    needs = (KeepDecision,)
    produces = StoredFrame
    listens = (FrameEvicted,)

    def __init__(
        self,
        project: VottProject,
        *,
        jpeg_quality: int = 90,
        in_place_folder: Path | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.project = project
        self.events = events
        self.frames_dir = project.frames_dir
        self.jpeg_quality = jpeg_quality
        self.in_place_folder = in_place_folder.resolve() if in_place_folder else None
        self.counts: Counter[str] = Counter()

    def image_path_for(self, frame: Frame) -> Path | None:
        """Where the frame already is when it comes from the in-place folder, else None."""
        if self.in_place_folder is None or frame.origin is None:
            return None
        origin = Path(frame.origin)
        return origin if origin.parent == self.in_place_folder else None

    def handle(self, result: FrameResult, outputs: Outputs) -> StoredFrame:
        """Store the picture (if kept) and write its asset."""
        self.project.catch_up()  # every frame, kept or not
        if not outputs.get(KeepDecision).keep:
            return NOT_STORED
        frame = result.frame
        path = self.image_path_for(frame)
        image = None
        if path is None:
            image = stored_image(frame, self.jpeg_quality)
            path = self.frames_dir / f"{frame.frame_id}.{image.format}"
            if self.project.reviewed(path):
                self.counts[WriteOutcome.KEPT_REVIEWED] += 1
                reviewed = AssetWrite(self.project.asset_id_for(path), WriteOutcome.KEPT_REVIEWED)
                return StoredFrame(path, image, reviewed)
            self.project.write_frame(path, image.data, same_as=_source_file(frame, image))
            self.counts["frames_written"] += 1
        asset = self.project.add_frame(
            path, frame.width, frame.height, result.detections, model=result.model, timestamp=frame.timestamp
        )
        self.counts[asset.outcome] += 1
        files: tuple[Path, ...] = (path,)
        if asset.asset_id and asset.outcome in _AGENT_ASSETS:
            files += (self.project.asset_file(asset.asset_id), self.project.scores_file(asset.asset_id))
        return StoredFrame(path, image, asset, files)

    def on_event(self, event: object) -> None:
        """A frame the disk quota evicted: out of the project (its files go when the store confirms);
        a frame the reviewer touched stays, files and all."""
        assert isinstance(event, FrameEvicted)
        eviction = event.eviction
        reviewed = bool(eviction.paths) and self.project.reviewed(eviction.paths[0])
        if reviewed:
            self.counts["evictions_kept_reviewed"] += 1
        elif eviction.paths:
            self.project.remove_frame(eviction.paths[0])
        log.debug("evicted %s (%s)", eviction.frame_id, eviction.cause)
        if self.events is not None:
            self.events.post(EvictionDone(eviction, keep_files=reviewed))

    def tick(self) -> None:
        """Save the project when a change has waited long enough."""
        self.project.catch_up()

    def close(self) -> None:
        """Save the project file; say how many frames were left as the reviewer saved them."""
        self.project.close()
        kept = self.counts[WriteOutcome.KEPT_REVIEWED] + self.counts["evictions_kept_reviewed"]
        if kept:
            log.info(
                "%d frame(s) a reviewer changed in VoTT left as they were saved (%d seen again, "
                "%d kept through an eviction)",
                kept,
                self.counts[WriteOutcome.KEPT_REVIEWED],
                self.counts["evictions_kept_reviewed"],
            )

    def stats(self) -> Mapping[str, Any]:
        """Frames written and what happened to their assets, project name."""
        return {"project": self.project.name, **{str(k): v for k, v in sorted(self.counts.items())}}


def _source_file(frame: Frame, image: EncodedImage) -> tuple[Path, FileMark] | None:
    """The file a frame's stored bytes are, unchanged (a folder's image, as the source read it),
    for a hard link instead of a copy: no second write of the same bytes (the kernel's work of
    creating a 150 kB file, and the SD card's); None for any other frame."""
    point = frame.resume_point
    if image.data is not frame.encoded or point is None or point.frame_index or frame.origin is None:
        return None
    origin = Path(frame.origin)
    return (origin, point.file) if origin.name == point.file.name else None
