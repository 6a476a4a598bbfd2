"""VoTT 2.2.0 asset files: ``IAssetMetadata`` (``{asset, regions, version}``) from detections, and
boxes back from regions (``../shared/vott/SPEC.md`` §3)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agent.boxes import clip_xyxy, ltwh_to_xyxy, xyxy_to_ltwh
from agent.detections import Detections
from agent.vott.paths import IMAGE_FORMATS, asset_format, asset_id, asset_name, file_uri, short_id

log = logging.getLogger(__name__)

VOTT_VERSION = "2.2.0"


_COORD_DECIMALS = 2  # region coordinates are written to 1/100 pixel


def _js_num(value: float) -> int | float:
    """A number as JSON should show it: integral values without ``.0``."""
    number = float(value)
    return int(number) if number.is_integer() else number


@functools.lru_cache(maxsize=256)
def _asset_identity(reviewer_path: str) -> tuple[str, str, str, str, int]:
    """``format``, ``id``, ``name``, ``path`` and ``type`` of the asset at ``reviewer_path`` (the
    same file is seen again as its asset is written and published: computed once)."""
    name = asset_name(reviewer_path)
    fmt = asset_format(name)
    kind = 1 if fmt.lower() in IMAGE_FORMATS or fmt.lower() in ("tif", "tiff") else 0
    return fmt, asset_id(reviewer_path), name, file_uri(reviewer_path), kind


def make_asset(
    reviewer_path: str, width: int | None, height: int | None, *, state: int = 2
) -> dict[str, Any]:
    """VoTT ``IAsset`` for an image at the reviewer-side ``reviewer_path`` (native, absolute);
    ``width``/``height`` in pixels (None when unknown: VoTT measures it), ``state`` 0/1/2."""
    fmt, aid, name, path, kind = _asset_identity(reviewer_path)
    size = {"width": int(width), "height": int(height)} if width and height else None
    return {"format": fmt, "id": aid, "name": name, "path": path, "size": size, "state": state, "type": kind}


def make_regions(
    xyxy: NDArray[Any], labels: Sequence[str], width: int, height: int, id_seed: str
) -> tuple[list[dict[str, Any]], NDArray[np.int64]]:
    """VoTT RECTANGLE regions for boxes ``xyxy`` (pixels) with one tag each.

    Boxes are clipped to the ``width`` x ``height`` image and rounded to 1/100 pixel; boxes with
    no area left are dropped. Region ids are derived from ``id_seed`` (the asset id) and the
    box index, so the same input gives the same ids. Returns the regions and the index of the
    input box each region came from."""
    boxes = np.round(clip_xyxy(xyxy, width, height).astype(np.float64), _COORD_DECIMALS)
    ltwh = np.round(xyxy_to_ltwh(boxes).astype(np.float64), _COORD_DECIMALS)
    keep = np.flatnonzero((ltwh[:, 2] > 0) & (ltwh[:, 3] > 0))
    if len(keep) < len(boxes):
        log.debug(
            "dropped %d box(es) with no area inside the %dx%d image", len(boxes) - len(keep), width, height
        )
    regions = []
    corner_rows, ltwh_rows = boxes.tolist(), ltwh.tolist()  # one conversion, not one per box
    for i in keep.tolist():
        x1, y1, x2, y2 = map(_js_num, corner_rows[i])
        left, top, w, h = map(_js_num, ltwh_rows[i])
        regions.append(
            {
                "id": short_id(f"{id_seed}/{i}"),
                "type": "RECTANGLE",
                "tags": [str(labels[i])],
                "boundingBox": {"height": h, "width": w, "left": left, "top": top},
                "points": [{"x": x1, "y": y1}, {"x": x2, "y": y1}, {"x": x2, "y": y2}, {"x": x1, "y": y2}],
            }
        )
    return regions, keep


def asset_metadata(
    reviewer_path: str, width: int, height: int, detections: Detections
) -> tuple[dict[str, Any], NDArray[np.int64]]:
    asset = make_asset(reviewer_path, width, height)
    regions, kept = make_regions(detections.xyxy, detections.label_names(), width, height, asset["id"])
    asset["state"] = 2 if regions else 1
    return {"asset": asset, "regions": regions, "version": VOTT_VERSION}, kept


def scored_regions(
    meta: dict[str, Any], kept: Sequence[int], detections: Detections, *, with_scores: bool = True
) -> list[dict[str, Any]]:
    """Each region of ``meta`` (from ``asset_metadata``, ``kept`` its detection indices) with its
    label, score (None unless ``with_scores``) and ``box_xyxy``: what the scores sidecar records."""
    names = detections.label_names()
    scores = detections.score.tolist()
    out = []
    for region, i in zip(meta["regions"], kept, strict=True):
        p = region["points"]
        out.append(
            {
                "id": region["id"],
                "label": names[i],
                "score": round(float(scores[i]), 5) if with_scores else None,
                "box_xyxy": [p[0]["x"], p[0]["y"], p[2]["x"], p[2]["y"]],
            }
        )
    return out


def asset_json(reviewer_path: str, width: int, height: int, detections: Detections) -> dict[str, Any]:
    """The VoTT ``IAssetMetadata`` (``{asset, regions, version}``, the content of an
    ``<id>-asset.json``) for one frame at the reviewer-side ``reviewer_path`` of ``width`` x
    ``height`` pixels, with one RECTANGLE region per detection (state 2 when there is any)."""
    return asset_metadata(reviewer_path, width, height, detections)[0]


@dataclass(frozen=True)
class RegionBoxes:
    """Boxes read from VoTT regions: one row per (region, tag) pair, as VoTT's exporters do."""

    xyxy: NDArray[np.float32]  # [N, 4] pixels
    labels: list[str]
    region_ids: list[str]

    def to_detections(self, scores: ArrayLike | None = None, labels: Sequence[str] = ()) -> Detections:
        """These boxes as ``Detections`` (score 1.0 unless ``scores`` are given); class ids index
        ``labels`` followed by any label not in it, in order of appearance."""
        names = list(dict.fromkeys([*labels, *self.labels]))
        index = {name: i for i, name in enumerate(names)}
        score = np.ones(len(self.labels), np.float32) if scores is None else scores
        return Detections.create(self.xyxy, score, [index[label] for label in self.labels], names)


def parse_regions(regions: Any) -> RegionBoxes:
    """Boxes of VoTT ``regions`` (from their ``boundingBox``; any region type).

    A region with several tags gives one box per tag; a region without tags gives none.
    Raises ``ValueError`` saying what is malformed (for untrusted input)."""
    if not isinstance(regions, list):
        raise ValueError("'regions' must be a list")
    ltwh: list[list[float]] = []
    labels: list[str] = []
    ids: list[str] = []
    for i, region in enumerate(regions):
        if not isinstance(region, dict):
            raise ValueError(f"regions[{i}] must be an object")
        box = region.get("boundingBox")
        tags = region.get("tags")
        if not isinstance(box, dict):
            raise ValueError(f"regions[{i}].boundingBox must be an object")
        values = [box.get(k) for k in ("left", "top", "width", "height")]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in values):
            raise ValueError(f"regions[{i}].boundingBox needs finite numbers left, top, width, height")
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise ValueError(f"regions[{i}].tags must be a list of non-empty strings")
        for tag in tags:
            ltwh.append([float(v) for v in values])  # type: ignore[arg-type]
            labels.append(tag)
            ids.append(str(region.get("id", "")))
    return RegionBoxes(ltwh_to_xyxy(ltwh), labels, ids)
