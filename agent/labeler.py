"""The labeller stage: kept frames and their detections into a VoTT 2.2.0 project on disk.

Layout under ``output.dir`` (``D``)::

    D/frames/<frame id>.jpg          the kept frames (VoTT's source folder)
    D/vott/<project>.vott            the project, <asset id>-asset.json per frame with detections,
    D/vott/edge-agent-scores/        and the detection scores VoTT has no field for

A frame is written with the source's own JPEG/PNG bytes when it has them, else encoded as
JPEG. Frames from a folder that already is the VoTT source folder (``edge-agent label`` on one
folder) are used in place. Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import cv2

from agent.errors import UserError
from agent.frames import Frame, FrameResult
from agent.vott import VottProject, annotation_json

log = logging.getLogger(__name__)


def encode_frame(frame: Frame, jpeg_quality: int) -> tuple[bytes, str]:
    """The bytes to store for a frame and their extension: the source's own bytes when it had
    them, else a JPEG of ``jpeg_quality`` (10-100)."""
    if frame.encoded is not None:
        return frame.encoded, frame.encoded_format
    ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise UserError(f"cannot encode frame {frame.frame_id} as JPEG")
    return buf.tobytes(), "jpg"


class VottStage:
    """Writes every kept frame and its detections into a ``VottProject``."""

    name = "vott"

    def __init__(
        self,
        project: VottProject,
        *,
        jpeg_quality: int = 90,
        in_place_folder: Path | None = None,
    ) -> None:
        self.project = project
        self.frames_dir = project.frames_dir
        self.jpeg_quality = jpeg_quality
        self.in_place_folder = in_place_folder.resolve() if in_place_folder else None
        self.written = 0
        self.assets = 0
        self.write_ms_total = 0.0

    def image_path_for(self, frame: Frame) -> Path | None:
        """Where the frame already is when it comes from the in-place folder, else None."""
        if self.in_place_folder is None:
            return None
        for ext in ("jpg", "jpeg", "png", "bmp", "JPG", "JPEG", "PNG", "BMP"):
            candidate = self.in_place_folder / f"{frame.name}.{ext}"
            if candidate.is_file():
                return candidate
        return None

    def handle(self, result: FrameResult) -> None:
        """Write the frame (if kept) and its asset file; records ``image_path`` and ``asset_id``."""
        self.project.catch_up()  # every frame, kept or not
        if not result.keep:
            return
        t0 = time.perf_counter()
        frame = result.frame
        path = self.image_path_for(frame)
        if path is None:
            data, ext = encode_frame(frame, self.jpeg_quality)
            path = self.frames_dir / f"{frame.frame_id}.{ext}"
            self.project.write_frame(path, data)
            self.written += 1
        result.image_path = str(path)
        result.annotation = annotation_json(
            self.project.reviewer_path(path), frame.width, frame.height, result.detections
        )
        result.asset_id = self.project.add_frame(
            path,
            frame.width,
            frame.height,
            result.detections,
            model=result.model,
            timestamp=frame.timestamp,
            annotation=result.annotation,
        )
        if result.asset_id:
            self.assets += 1
        elapsed = (time.perf_counter() - t0) * 1000.0
        result.timings_ms["write"] = elapsed
        self.write_ms_total += elapsed

    def remove(self, image_path: str) -> None:
        """Forget a kept frame: its asset file, scores, map entry and (unless in place) image."""
        self.project.remove_frame(image_path)
        path = Path(image_path)
        if self.in_place_folder is None or path.parent.resolve() != self.in_place_folder:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def close(self) -> None:
        """Save the project file."""
        self.project.close()

    def stats(self) -> dict[str, Any]:
        """Frames written, assets with detections, project name."""
        return {"project": self.project.name, "frames_written": self.written, "assets": self.assets}
