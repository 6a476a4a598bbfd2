"""Closing a sealed batch: its VoTT 2.2.0 project, then the ``CLOSED`` marker.

The project lists the frames whose annotation has detections (VoTT lists the other frames as
not visited); its tags start with the tag order of the device's previous project (the reviewer's
hot keys), then the new labels. ``CLOSED`` is written last, so a batch with ``CLOSED`` is
complete; the caller holds the device's lock and ``verify`` is called before each commit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable

import numpy as np

from agent.config.review import ReviewSettings
from agent.detections import Detections
from agent.errors import ConfigError, UserError
from agent.fsutil import atomic_write_json
from agent.jpeg import JpegError, jpeg_info
from agent.review.annotation import Annotation
from agent.review.batches import CLOSED, SEALED, VOTT_DIR, Batch, CloseResult, batch_sort_key, read_json
from agent.utc import utc_iso
from agent.vott import VottProject, WriteOutcome

log = logging.getLogger(__name__)

MAX_TAGS = 1000


def ready_to_close(batch: Batch, now: float, grace_s: float) -> bool:
    """True when the sealed ``batch`` has every frame's annotation (and every annotation's
    frame), or was sealed ``grace_s`` ago."""
    try:
        sealed_at = float(read_json(batch.path / SEALED)["sealed_at_s"])
    except (OSError, ValueError, KeyError, TypeError):
        sealed_at = (batch.path / SEALED).stat().st_mtime
    if now - sealed_at >= grace_s:
        return True
    return batch.frame_ids() == batch.annotation_ids()


def previous_tags(batch: Batch, closed_newest_first: Iterable[str]) -> list[str]:
    """Tag order of the device's newest closed project before ``batch``."""
    for name in closed_newest_first:
        if batch_sort_key(name) >= batch_sort_key(batch.name):
            continue
        previous = Batch(batch.device, name, batch.path.parent / name, "closed")
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            tags = read_json(previous.project_file).get("tags") or []
            return [str(t["name"]) for t in tags if isinstance(t, dict) and isinstance(t.get("name"), str)]
        return []
    return []


def write_project(
    batch: Batch,
    settings: ReviewSettings,
    *,
    local_root: str,
    tags_before: list[str],
    read_annotation: Callable[[Batch, str], Annotation | None],
    verify: Callable[[], None],
    now: float,
) -> CloseResult:
    """Write the batch's VoTT project (assets for frames whose annotation has boxes), then ``CLOSED``."""
    frames = sorted(batch.frame_ids())
    annotation_ids = batch.annotation_ids()
    annotations = {fid: a for fid in frames if fid in annotation_ids and (a := read_annotation(batch, fid))}
    labels = [label for fid in frames if fid in annotations for label in annotations[fid].labels]
    tags = list(dict.fromkeys([*tags_before, *labels]))[:MAX_TAGS]
    try:
        project = VottProject(
            batch.vott_dir,
            batch.frames_dir,
            name=batch.project_name,
            local_root=local_root,
            reviewer_root=settings.reviewer_root,
            tags=tags,
            security_token=settings.security_token,
            flush_every=0,
            fsync=settings.fsync,
        )
    except ConfigError as exc:
        raise UserError(
            f"batch {batch.path} was partly written for another reviewer root ({exc}); delete its "
            f"'{VOTT_DIR}' folder and the receiver writes it again"
        ) from None
    assets = sum(_add_asset(project, batch, fid, annotations.get(fid)) for fid in frames)
    verify()
    project.save()
    result = CloseResult(
        batch=batch.with_state("closed"),
        frames=len(frames),
        assets=assets,
        frames_without_annotation=sum(1 for fid in frames if fid not in annotation_ids),
        annotations_without_frame=len(annotation_ids - set(frames)),
    )
    verify()
    atomic_write_json(
        batch.path / CLOSED,
        {
            "closed_at": utc_iso(now),
            "project": str(batch.project_file.relative_to(batch.path)),
            "frames": result.frames,
            "assets": result.assets,
            "frames_without_annotation": result.frames_without_annotation,
            "annotations_without_frame": result.annotations_without_frame,
        },
        fsync=settings.fsync,
    )
    log.info("closed %s", result.describe())
    return result


def _add_asset(project: VottProject, batch: Batch, frame_id: str, annotation: Annotation | None) -> int:
    """Add the frame to the project when its annotation has detections; 1 when an asset was written
    (0 when there was nothing to write, or a reviewer's asset was left as it is)."""
    if annotation is None or not annotation.labels:
        return 0
    image = batch.frame_file(frame_id)
    try:
        info = jpeg_info(image.read_bytes())
    except (OSError, JpegError) as exc:  # it was checked on arrival: the file was damaged since
        log.warning("%s: %s; leaving it out of the project", image, exc)
        return 0
    if (info.width, info.height) != (annotation.width, annotation.height):
        return 0  # checked when the pair met; only a damaged file ends up here
    index = {label: i for i, label in enumerate(dict.fromkeys(annotation.labels))}
    known = all(s is not None for s in annotation.scores)
    detections = Detections.create(
        np.asarray(annotation.boxes, np.float32).reshape(-1, 4),
        [s if s is not None else 1.0 for s in annotation.scores],
        [index[label] for label in annotation.labels],
        list(index),
    )
    write = project.add_frame(
        image, info.width, info.height, detections, model=annotation.model, record_scores=known
    )
    return 1 if write.outcome in (WriteOutcome.ADDED, WriteOutcome.UPDATED) else 0
