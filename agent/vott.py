"""VoTT 2.2.0 projects: write pre-labelled frames a reviewer opens in VoTT, and read them back.

The rules come from ``../shared/vott/SPEC.md`` (§7 is the writer's checklist):

* Frames live in a local folder ``F`` (VoTT's *source connection*), project files in ``T`` (the
  *target connection*: ``<name>.vott`` and one ``<asset id>-asset.json`` per tagged frame).
* The reviewer sees both folders under another root: ``local_root`` (a local folder holding ``T``
  and ``F``) is ``reviewer_root`` on the reviewer's machine. Every path written into the project
  (connection ``folderPath``s, asset ``path``) is the reviewer's, in the reviewer's OS syntax
  (Windows when ``reviewer_root`` starts with a drive letter or ``\\\\server``).
* An asset id is ``md5("file:" + encodeURI(reviewer path with "/" separators))`` with ``#`` ->
  ``%23`` and ``?`` -> ``%3F``, exactly what VoTT 2.2.0's folder scan computes, so VoTT does not
  list a frame twice.
* Only frames with detections become assets (state 2, Tagged); others stay out of the project
  and VoTT lists them as not visited.

Scores: VoTT has no score field, so each asset's scores live in a sidecar file
``T/edge-agent-scores/<asset id>.json``::

    {"asset_id": "...", "image": "frame.jpg", "model": "ssd.tflite" | null,
     "timestamp": "2026-01-01T00:00:00.000Z" | null,
     "regions": [{"id": "<region id>", "label": "person", "score": 0.87,
                  "box_xyxy": [x1, y1, x2, y2]}]}

``timestamp`` is the frame's capture time (UTC), boxes are pixels of the original frame, and
regions are matched to the asset file by region id (VoTT keeps a region's id when the reviewer
moves it). VoTT never reads that folder and the validator ignores sub-folders of ``T``.

The ``.vott`` file is rewritten by ``VottProject.save()`` (every ``flush_every`` changes but at
most every ``min_save_interval_s``, or when the caller asks): a long run need not rewrite a
10k-asset project file per frame. Asset files are written first, so a crash leaves asset files
the project file does not list yet; opening the project again adds them back (and drops entries
whose asset file is gone, or whose asset or frame file a power cut left empty).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import ntpath
import os
import posixpath
import re
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agent.boxes import as_boxes, clip_xyxy, ltwh_to_xyxy, xyxy_to_ltwh
from agent.config.output import DEFAULT_SECURITY_TOKEN
from agent.detections import Detections
from agent.errors import ConfigError, UserError
from agent.fsutil import GroupSync, atomic_write_bytes, atomic_write_json
from agent.utc import utc_iso

log = logging.getLogger(__name__)

VOTT_VERSION = "2.2.0"
SCORES_DIR = "edge-agent-scores"
ASSET_SUFFIX = "-asset.json"
# VoTT's own palette (src/react/components/common/tagColors.json); tag i gets colour i mod 20.
TAG_COLORS: tuple[str, ...] = (
    "#5db300", "#e81123", "#6917aa", "#015cda", "#4894fe", "#6b849c", "#70c400", "#f7929a", "#257ffe",
    "#ddabe9", "#ff8c00", "#386300", "#b40e1b", "#68217a", "#33cccc", "#016afe", "#595959", "#808080",
    "#990066", "#00bcf2",
)  # fmt: skip
# Extensions VoTT lists as images (services/assetService.ts getAssetType); TIFF is listed but not shown.
IMAGE_FORMATS = frozenset({"gif", "jpg", "jpeg", "png", "bmp"})
# JavaScript encodeURI leaves these unescaped besides letters, digits and "-_.~"; VoTT then escapes
# "#" and "?" itself (common/utils.ts encodeFileURI), so neither is here.
_ENCODE_URI_SAFE = ";,/:@&=+$!*'()"
_FORBIDDEN_NAME_CHARS = set('\\/:*?"<>|')  # projectForm.json: not allowed in a project name
_WINDOWS_FILE_CHARS = set('\\/:*?"<>|')  # not allowed in a Windows file name
_WINDOWS_ROOT = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")
_COORD_DECIMALS = 2  # region coordinates are written to 1/100 pixel


# --------------------------------------------------------------------------------------------
# Paths and ids
# --------------------------------------------------------------------------------------------
def is_windows_path(path: str) -> bool:
    """True for ``C:\\...``, ``C:/...`` and UNC ``\\\\server\\share`` paths."""
    return bool(_WINDOWS_ROOT.match(path))


def normalize_native_path(path: str) -> str:
    """``path`` normalised the way Node's ``path.normalize`` does on the OS it belongs to
    (Windows: backslashes, ``.``/``..`` and repeated separators resolved; POSIX the same with ``/``),
    without a trailing separator unless it is a root."""
    if is_windows_path(path):
        return ntpath.normpath(path)
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm  # Node collapses a leading "//"


def join_native(folder: str, name: str) -> str:
    """``folder`` joined with ``name`` in ``folder``'s OS syntax, normalised (VoTT's scan does this)."""
    sep = "\\" if is_windows_path(folder) else "/"
    return normalize_native_path(folder + sep + name)


def file_uri(native_path: str) -> str:
    """VoTT's ``asset.path`` for a file: ``"file:" + encodeURI(path with "/" separators)`` with
    ``#`` and ``?`` escaped, e.g. ``C:\\a b\\x#1.jpg`` -> ``file:C:/a%20b/x%231.jpg``."""
    try:
        encoded = urllib.parse.quote(native_path.replace("\\", "/"), safe=_ENCODE_URI_SAFE)
    except UnicodeEncodeError:
        raise UserError(
            f"the path {native_path!r} is not valid UTF-8, so VoTT cannot address it; rename the file"
        ) from None
    return "file:" + encoded


def native_path_from_uri(uri: str) -> str:
    """The reviewer's native path of a ``file:`` asset path (inverse of ``file_uri``)."""
    if not uri.lower().startswith("file:"):
        raise ValueError(f"not a file: URI: {uri!r}")
    rest = urllib.parse.unquote(uri[len("file:") :])
    if rest.startswith("///"):  # file:///C:/x or file:///home/x written by other tools
        rest = rest[2:]
        if re.match(r"^/[A-Za-z]:/", rest):
            rest = rest[1:]
    if re.match(r"^[A-Za-z]:/", rest) or rest.startswith("//"):
        return rest.replace("/", "\\")
    return rest


def asset_id(native_path: str) -> str:
    """VoTT 2.2.0 asset id of the file at the reviewer-side ``native_path``: md5 of its ``file_uri``."""
    return hashlib.md5(file_uri(native_path).encode("utf-8")).hexdigest()


def asset_name(native_path: str) -> str:
    """VoTT's ``asset.name``: the last segment of the (URL-encoded) asset path."""
    return re.split(r"[\\/]", file_uri(native_path))[-1]


def asset_format(name: str) -> str:
    """VoTT's ``asset.format``: the extension of ``name``, case preserved, cut at ``?``/``#``."""
    return re.split(r"[?#]", name.split(".")[-1])[0]


def decoded_name(asset: dict[str, Any]) -> str:
    """The real file name of a VoTT asset (its ``name`` URL-decoded)."""
    return urllib.parse.unquote(str(asset.get("name", "")))


def project_id(name: str) -> str:
    """A stable VoTT-style short id (9 characters of ``[A-Za-z0-9_-]``) derived from a project name."""
    digest = hashlib.md5(f"edge-agent:{name}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:9]


def _short_id(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.md5(text.encode("utf-8")).digest()).decode("ascii")[:9]


@dataclass(frozen=True)
class PathMapping:
    """Where local folders appear on the reviewer's machine.

    ``local_root`` is a local folder; ``reviewer_root`` is the same folder as the reviewer's
    VoTT sees it (``/home/ann/review`` or ``C:\\Users\\ann\\review``)."""

    local_root: Path
    reviewer_root: str

    @classmethod
    def create(cls, local_root: str | os.PathLike[str], reviewer_root: str | None = None) -> PathMapping:
        """Check and normalise; ``reviewer_root`` defaults to ``local_root`` itself."""
        local = Path(os.path.abspath(local_root))
        reviewer = str(local) if reviewer_root is None else str(reviewer_root).strip()
        if not (reviewer.startswith("/") or is_windows_path(reviewer)):
            raise ConfigError(
                f"reviewer root {reviewer!r} is not an absolute path; give the folder as the reviewer's "
                "computer sees it, e.g. /home/ann/review or C:\\Users\\ann\\review"
            )
        return cls(local, normalize_native_path(reviewer))

    @property
    def windows(self) -> bool:
        """True when the reviewer runs Windows."""
        return is_windows_path(self.reviewer_root)

    def reviewer_path(self, local_path: str | os.PathLike[str]) -> str:
        """The reviewer's native path of a local file or folder under ``local_root``."""
        local = Path(os.path.abspath(local_path))
        try:
            rel = local.relative_to(self.local_root)
        except ValueError:
            raise ConfigError(
                f"{local} is not inside the local root {self.local_root}; put the frames and target "
                "folders under one folder and pass it as the local root"
            ) from None
        out = self.reviewer_root
        for part in rel.parts:
            out = join_native(out, part)
        return out


# --------------------------------------------------------------------------------------------
# Asset JSON (IAsset / IAssetMetadata / IRegion)
# --------------------------------------------------------------------------------------------
def _js_num(value: float) -> int | float:
    """A number as JSON should show it: integral values without ``.0``."""
    return int(value) if float(value).is_integer() else float(value)


def make_asset(
    reviewer_path: str, width: int | None, height: int | None, *, state: int = 2
) -> dict[str, Any]:
    """VoTT ``IAsset`` for an image at the reviewer-side ``reviewer_path`` (native, absolute);
    ``width``/``height`` in pixels (None when unknown: VoTT measures it), ``state`` 0/1/2."""
    name = asset_name(reviewer_path)
    fmt = asset_format(name)
    size = {"width": int(width), "height": int(height)} if width and height else None
    return {
        "format": fmt,
        "id": asset_id(reviewer_path),
        "name": name,
        "path": file_uri(reviewer_path),
        "size": size,
        "state": state,
        "type": 1 if fmt.lower() in IMAGE_FORMATS or fmt.lower() in ("tif", "tiff") else 0,
    }


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
    for i in keep.tolist():
        x1, y1, x2, y2 = (_js_num(v) for v in boxes[i].tolist())
        left, top, w, h = (_js_num(v) for v in ltwh[i].tolist())
        regions.append(
            {
                "id": _short_id(f"{id_seed}/{i}"),
                "type": "RECTANGLE",
                "tags": [str(labels[i])],
                "boundingBox": {"height": h, "width": w, "left": left, "top": top},
                "points": [{"x": x1, "y": y1}, {"x": x2, "y": y1}, {"x": x2, "y": y2}, {"x": x1, "y": y2}],
            }
        )
    return regions, keep


def _asset_metadata(
    reviewer_path: str, width: int, height: int, detections: Detections
) -> tuple[dict[str, Any], NDArray[np.int64]]:
    asset = make_asset(reviewer_path, width, height)
    regions, kept = make_regions(detections.xyxy, detections.label_names(), width, height, asset["id"])
    asset["state"] = 2 if regions else 1
    return {"asset": asset, "regions": regions, "version": VOTT_VERSION}, kept


def asset_json(reviewer_path: str, width: int, height: int, detections: Detections) -> dict[str, Any]:
    """The VoTT ``IAssetMetadata`` (``{asset, regions, version}``, the content of an
    ``<id>-asset.json``) for one frame at the reviewer-side ``reviewer_path`` of ``width`` x
    ``height`` pixels, with one RECTANGLE region per detection (state 2 when there is any)."""
    return _asset_metadata(reviewer_path, width, height, detections)[0]


def annotation_json(reviewer_path: str, width: int, height: int, detections: Detections) -> dict[str, Any]:
    """A frame's VoTT asset JSON (``asset``, ``regions``, ``version``) plus ``scores``:
    ``[{"region_id", "label", "score"}]`` for each region. The asset file holds all but the scores
    (VoTT has no score field); the ``annotations/<frame_id>`` MQTT message holds all of it."""
    meta, kept = _asset_metadata(reviewer_path, width, height, detections)
    names = detections.label_names()
    meta["scores"] = [
        {"region_id": region["id"], "label": names[i], "score": round(float(detections.score[i]), 5)}
        for region, i in zip(meta["regions"], kept.tolist(), strict=True)
    ]
    return meta


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


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------
def _check_project_name(name: str) -> str:
    bad = sorted(set(name) & _FORBIDDEN_NAME_CHARS)
    if not name.strip() or bad:
        raise ConfigError(
            f"VoTT project name {name!r} is empty or contains {''.join(bad)!r}; VoTT saves the project as "
            "'<name>.vott', so use letters, digits, spaces, '-' or '_'"
        )
    return name


def default_project_name(target_dir: str | os.PathLike[str]) -> str:
    """A VoTT-safe project name from a target folder's name (``edge-agent`` if nothing is left)."""
    name = "".join(c for c in Path(os.path.abspath(target_dir)).name if c not in _FORBIDDEN_NAME_CHARS)
    return name.strip() or "edge-agent"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}; restore the file or remove it") from None


class VottProject:
    """A VoTT 2.2.0 project being written: frames in ``frames_dir``, project files in ``target_dir``.

    Opens the project in ``target_dir`` when there is one (resuming its assets, tags and id) or
    creates it. ``local_root`` is a local folder holding both folders (default: their common
    parent) and ``reviewer_root`` is that folder on the reviewer's machine (default: the same
    path). ``tags`` are declared up front (in this order, hot keys 1-9), labels seen later are
    appended. The ``.vott`` file is rewritten after every ``flush_every`` changes (0: only on
    ``save()``/``close()``), but at most once per ``min_save_interval_s`` seconds: the whole
    project is rewritten each time, so a large project saved on every few frames would cost
    more than the frames. Thread-safe.
    """

    def __init__(
        self,
        target_dir: str | os.PathLike[str],
        frames_dir: str | os.PathLike[str],
        *,
        name: str | None = None,
        local_root: str | os.PathLike[str] | None = None,
        reviewer_root: str | None = None,
        tags: Iterable[str] = (),
        security_token: str = DEFAULT_SECURITY_TOKEN,
        flush_every: int = 1,
        min_save_interval_s: float = 0.0,
        description: str | None = None,
        fsync: bool = True,
        group_sync: GroupSync | None = None,
    ) -> None:
        self.target_dir = Path(os.path.abspath(target_dir))
        self.frames_dir = Path(os.path.abspath(frames_dir))
        if flush_every < 0:
            raise ConfigError(f"flush_every must be >= 0 (changes between project saves), got {flush_every}")
        self.flush_every = flush_every
        self.min_save_interval_s = min_save_interval_s
        self._saved_at = -math.inf  # time.monotonic() of the last save
        self._fsync = fsync
        # with a GroupSync, frames and asset files are flushed in groups, always before the .vott
        # lists them; without one (and with fsync) each file is flushed as it is written
        self._group_sync = group_sync if fsync else None
        self._fsync_each = fsync and group_sync is None
        self._lock = threading.RLock()
        self._pending = 0
        root = (
            local_root if local_root is not None else os.path.commonpath([self.target_dir, self.frames_dir])
        )
        self.mapping = PathMapping.create(root, reviewer_root)
        self.reviewer_frames_dir = self.mapping.reviewer_path(self.frames_dir)
        self.reviewer_target_dir = self.mapping.reviewer_path(self.target_dir)
        for label, folder in (("target", self.target_dir), ("frames", self.frames_dir)):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create the VoTT {label} folder {folder}: {exc}") from None
        existing = sorted(self.target_dir.glob("*.vott"))
        if name is None:
            if len(existing) > 1:
                raise ConfigError(
                    f"{self.target_dir} holds several projects ({', '.join(p.name for p in existing)}); "
                    "pass the project name to choose one"
                )
            name = existing[0].stem if existing else default_project_name(self.target_dir)
        self.name = _check_project_name(name)
        self.project_file = self.target_dir / f"{self.name}.vott"
        others = [p for p in existing if p != self.project_file]
        if others and not self.project_file.exists():
            raise ConfigError(
                f"{self.target_dir} already holds the VoTT project {others[0].name}; VoTT expects one project "
                "per target folder, so use another folder or that project's name"
            )
        if self.project_file.exists():
            self._data = self._load_existing()
        else:
            self._data = self._new_project(security_token, description)
            self._pending = 1
        for tag in tags:
            self._ensure_tag(tag)
        if self._pending:
            self.save()

    # ---- construction -----------------------------------------------------------------------
    def _connection(self, role: str, folder: str) -> dict[str, Any]:
        return {
            "name": f"{self.name} {role}",
            "providerType": "localFileSystemProxy",
            "providerOptions": {"folderPath": folder},
            "id": _short_id(f"{self.name}/{role}"),
        }

    def _new_project(self, security_token: str, description: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "securityToken": security_token,
            "sourceConnection": self._connection("frames", self.reviewer_frames_dir),
            "targetConnection": self._connection("target", self.reviewer_target_dir),
            "videoSettings": {"frameExtractionRate": 15},
            "tags": [],
            "id": project_id(self.name),
            "activeLearningSettings": {"autoDetect": False, "predictTag": True, "modelPathType": "coco"},
            "exportFormat": {
                "providerType": "vottJson",
                "providerOptions": {"assetState": "visited", "includeImages": True},
            },
            "version": VOTT_VERSION,
            "assets": {},
        }
        if description:
            data["description"] = description
        return data

    def _load_existing(self) -> dict[str, Any]:
        data = _read_json(self.project_file)
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise UserError(
                f"{self.project_file} is not a VoTT 2 project file; move it away or use another target folder"
            )
        for key, expected in (
            ("sourceConnection", self.reviewer_frames_dir),
            ("targetConnection", self.reviewer_target_dir),
        ):
            opts = (data.get(key) or {}).get("providerOptions") or {}
            if "encrypted" in opts:
                log.warning(
                    "%s: %s was saved by VoTT (encrypted options kept as they are)", self.project_file, key
                )
            elif opts.get("folderPath") != expected:
                raise ConfigError(
                    f"{self.project_file} was written for the reviewer folder {opts.get('folderPath')!r} "
                    f"({key}), not {expected!r}; use the same reviewer root and folders as before, or "
                    "another target folder"
                )
        assets = data.get("assets")
        data["assets"] = dict(assets) if isinstance(assets, dict) else {}
        data["tags"] = [t for t in data.get("tags") or [] if isinstance(t, dict) and t.get("name")]
        data.setdefault("version", VOTT_VERSION)
        self._reconcile(data)
        return data

    def _reconcile(self, data: dict[str, Any]) -> None:
        """Make the assets map agree with the asset files (after a crash between the two writes)."""
        assets: dict[str, Any] = data["assets"]
        on_disk = {p.name[: -len(ASSET_SUFFIX)]: p for p in self.target_dir.glob(f"*{ASSET_SUFFIX}")}
        for aid, path in list(on_disk.items()):
            if path.stat().st_size == 0 or self._frame_emptied(path, assets.get(aid)):  # a power cut
                log.warning("%s: empty asset or frame file (power cut?); removing the asset", path)
                path.unlink()
                with contextlib.suppress(FileNotFoundError):
                    self.scores_file(aid).unlink()
                del on_disk[aid]
        for aid, entry in list(assets.items()):
            if isinstance(entry, dict) and entry.get("state") == 2 and aid not in on_disk:
                log.warning("%s: asset %s has no asset file any more; removing it", self.project_file, aid)
                del assets[aid]
                self._pending += 1
        for aid, path in on_disk.items():
            if aid in assets:
                continue
            try:
                meta = _read_json(path)
                asset = meta["asset"]
                parse_regions(meta["regions"])
                if asset["id"] != aid:
                    raise ValueError("asset id differs from the file name")
            except (UserError, KeyError, TypeError, ValueError) as exc:
                log.warning("%s: unusable asset file left as it is: %s", path, exc)
                continue
            assets[aid] = asset
            for tag in (t for r in meta["regions"] for t in r["tags"]):
                self._ensure_tag(tag, data)
            self._pending += 1
        if data.get("lastVisitedAssetId") not in assets:
            data.pop("lastVisitedAssetId", None)
            if assets:
                data["lastVisitedAssetId"] = next(iter(assets))
                self._pending += 1

    def _frame_emptied(self, asset_path: Path, entry: Any) -> bool:
        """True when the asset's frame in ``frames_dir`` exists but is empty (its data never
        reached the device); frames kept elsewhere are not checked. ``entry``: the asset's
        entry in the project's map, when it has one (saves reading the asset file)."""
        try:
            name = entry["name"] if isinstance(entry, dict) else _read_json(asset_path)["asset"]["name"]
            frame = self.frames_dir / str(name)
            return frame.is_file() and frame.stat().st_size == 0
        except (UserError, KeyError, TypeError, OSError):
            return False

    # ---- tags -------------------------------------------------------------------------------
    def _ensure_tag(self, tag: str, data: dict[str, Any] | None = None) -> None:
        tags: list[dict[str, str]] = (data if data is not None else self._data)["tags"]
        if not any(t["name"] == tag for t in tags):
            tags.append({"name": tag, "color": TAG_COLORS[len(tags) % len(TAG_COLORS)]})
            self._pending += 1

    @property
    def tags(self) -> list[str]:
        """Tag names in hot-key order."""
        with self._lock:
            return [t["name"] for t in self._data["tags"]]

    @property
    def id(self) -> str:
        """The project id (stable: derived from the name when the project was created)."""
        return str(self._data["id"])

    @property
    def assets(self) -> dict[str, dict[str, Any]]:
        """A copy of the assets map (asset id -> VoTT IAsset)."""
        with self._lock:
            return {k: dict(v) for k, v in self._data["assets"].items()}

    def __len__(self) -> int:
        return len(self._data["assets"])

    # ---- frames -----------------------------------------------------------------------------
    def reviewer_path(self, image_path: str | os.PathLike[str]) -> str:
        """The reviewer-side native path of a frame (which must sit directly in ``frames_dir``)."""
        local = Path(os.path.abspath(image_path))
        if local.parent != self.frames_dir:
            raise UserError(
                f"{local} is not directly in the frames folder {self.frames_dir}; VoTT 2.2.0 only lists the "
                "top level of its source folder, so save frames there"
            )
        fmt = asset_format(local.name).lower()
        if fmt not in IMAGE_FORMATS:
            raise UserError(
                f"{local.name}: VoTT shows only {', '.join(sorted(IMAGE_FORMATS))} images; save as .jpg"
            )
        if self.mapping.windows and set(local.name) & _WINDOWS_FILE_CHARS:
            raise UserError(
                f"{local.name!r} cannot exist on the reviewer's Windows computer (it contains one of "
                '\\ / : * ? " < > |); rename the frame'
            )
        return join_native(self.reviewer_frames_dir, local.name)

    def asset_id_for(self, image_path: str | os.PathLike[str]) -> str:
        """The VoTT asset id the reviewer's VoTT gives the frame ``image_path``."""
        return asset_id(self.reviewer_path(image_path))

    def asset_file(self, aid: str) -> Path:
        """Path of the ``<id>-asset.json`` of asset ``aid``."""
        return self.target_dir / f"{aid}{ASSET_SUFFIX}"

    def scores_file(self, aid: str) -> Path:
        """Path of the scores sidecar of asset ``aid``."""
        return self.target_dir / SCORES_DIR / f"{aid}.json"

    def add_frame(
        self,
        image_path: str | os.PathLike[str],
        width: int,
        height: int,
        detections: Detections,
        *,
        model: str | None = None,
        timestamp: float | None = None,
        record_scores: bool = True,
        annotation: dict[str, Any] | None = None,
    ) -> str | None:
        """Add (or replace) the frame ``image_path`` of ``width`` x ``height`` pixels with its
        ``detections`` (pixel boxes) as a Tagged asset; returns its asset id.

        A frame without detections (or whose boxes have no area inside the image) is not
        added, and an earlier asset of the same frame is removed; returns None then. Writes
        ``<id>-asset.json`` and the scores sidecar (``model``, capture ``timestamp`` in epoch
        seconds) atomically; the project file follows per ``flush_every``. ``annotation`` is
        this frame's ``annotation_json(self.reviewer_path(image_path), ...)`` when the caller
        has already built it (the agent publishes the same payload)."""
        if annotation is None:
            annotation = annotation_json(self.reviewer_path(image_path), width, height, detections)
        meta = {
            "asset": annotation["asset"],
            "regions": annotation["regions"],
            "version": annotation["version"],
        }
        aid = meta["asset"]["id"]
        if not meta["regions"]:
            self.remove_frame(image_path)
            return None
        with self._lock:
            for tag in dict.fromkeys(t for r in meta["regions"] for t in r["tags"]):
                self._ensure_tag(tag)
            # compact JSON (VoTT reads it; its own 4-space indent needs the slow pure-Python encoder)
            atomic_write_json(self.asset_file(aid), meta, indent=None, fsync=self._fsync_each)
            scores_path = self.scores_file(aid)
            if record_scores:
                scores_path.parent.mkdir(exist_ok=True)
                atomic_write_json(
                    scores_path,
                    {
                        "asset_id": aid,
                        "image": Path(image_path).name,
                        "model": model,
                        "timestamp": utc_iso(timestamp) if timestamp is not None else None,
                        "regions": [
                            {
                                "id": region["id"],
                                "label": score["label"],
                                "score": score["score"],
                                "box_xyxy": [region["points"][0]["x"], region["points"][0]["y"],
                                             region["points"][2]["x"], region["points"][2]["y"]],
                            }
                            for region, score in zip(meta["regions"], annotation["scores"], strict=True)
                        ],
                    },
                    indent=None,
                    fsync=self._fsync_each,
                )  # fmt: skip
            else:
                with contextlib.suppress(FileNotFoundError):
                    scores_path.unlink()
            self._wrote()
            self._data["assets"][aid] = dict(meta["asset"])  # the caller may keep the annotation
            self._data.setdefault("lastVisitedAssetId", aid)
            self._changed()
        return str(aid)

    def remove_frame(self, image_path: str | os.PathLike[str]) -> bool:
        """Remove a frame's asset file, scores and map entry (e.g. when a disk quota evicts the
        frame); True when there was something to remove."""
        aid = self.asset_id_for(image_path)
        with self._lock:
            found = self._data["assets"].pop(aid, None) is not None
            for path in (self.asset_file(aid), self.scores_file(aid)):
                try:
                    path.unlink()
                    found = True
                except FileNotFoundError:
                    pass
            if self._data.get("lastVisitedAssetId") == aid:
                self._data.pop("lastVisitedAssetId")
                if self._data["assets"]:
                    self._data["lastVisitedAssetId"] = next(iter(self._data["assets"]))
            if found:
                self._changed()
        return found

    # ---- saving -----------------------------------------------------------------------------
    def _changed(self) -> None:
        self._pending += 1
        self.save_if_due()

    def write_frame(self, path: str | os.PathLike[str], data: bytes) -> None:
        """Write a frame's image file atomically, flushed to the device like the asset files."""
        atomic_write_bytes(path, data, fsync=self._fsync_each)
        self._wrote()

    def _wrote(self) -> None:
        if self._group_sync is not None:
            self._group_sync.wrote()

    def catch_up(self) -> None:
        """Do the saves and flushes their intervals held back (call it now and then, e.g. per
        frame: otherwise they wait for the next change)."""
        self.save_if_due()
        if self._group_sync is not None:
            self._group_sync.flush_if_due()

    def save_if_due(self) -> None:
        """Save when ``flush_every`` changes wait and ``min_save_interval_s`` has passed."""
        with self._lock:
            if (
                self.flush_every
                and self._pending >= self.flush_every
                and time.monotonic() - self._saved_at >= self.min_save_interval_s
            ):
                self.save()

    @property
    def dirty(self) -> bool:
        """True when the project file is behind the asset files."""
        return self._pending > 0

    def save(self) -> None:
        """Write ``<name>.vott`` atomically (UTF-8 without BOM). Compact, not VoTT's 4-space
        indent: Python's C JSON encoder only runs without indent, 4-6x faster on large
        projects, and VoTT reads either."""
        with self._lock:
            if self._group_sync is not None:
                self._group_sync.flush()  # every asset the project lists is on the device first
            atomic_write_json(self.project_file, self._data, indent=None, fsync=self._fsync)
            self._pending = 0
            self._saved_at = time.monotonic()

    def close(self) -> None:
        """Save if anything changed since the last save; flush grouped writes."""
        with self._lock:
            if self._pending:
                self.save()
            if self._group_sync is not None:
                self._group_sync.flush()

    def __enter__(self) -> VottProject:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------
@dataclass
class LoadedAsset:
    """One asset of a project as read from disk.

    ``file_name`` is the real (decoded) image file name; ``image_path`` the local image, or None
    when it cannot be located (encrypted project without a source folder). ``xyxy`` pixels, one
    row per region tag; ``scores`` from the sidecar (NaN for regions it does not know) or None."""

    id: str
    file_name: str
    image_path: Path | None
    width: int | None
    height: int | None
    state: int
    xyxy: NDArray[np.float32]
    labels: list[str]
    region_ids: list[str]
    scores: NDArray[np.float32] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class LoadedProject:
    """A VoTT project read back: tags in order and assets in the assets map's order."""

    name: str
    id: str
    target_dir: Path
    tags: list[str]
    assets: list[LoadedAsset]
    source_folder: Path | None
    encrypted: bool

    def tagged(self) -> list[LoadedAsset]:
        """Assets with state 2 (Tagged), the ones VoTT's exporters take with ``assetState: tagged``."""
        return [a for a in self.assets if a.state == 2]

    def require_images(self, assets: Iterable[LoadedAsset]) -> None:
        """Raise ``ConfigError`` when an asset's image cannot be found locally."""
        for asset in assets:
            if asset.image_path is None:
                raise ConfigError(
                    f"{self.target_dir}: the project's folder paths are encrypted (VoTT saved it), so the "
                    "frames cannot be located; pass --source-folder with the folder holding the images"
                )
            if not asset.image_path.is_file():
                raise UserError(
                    f"image {asset.image_path} of asset {asset.id} does not exist; pass --source-folder with "
                    "the folder that holds the project's frames"
                )


def _local_source_folder(target_dir: Path, data: dict[str, Any]) -> tuple[str | None, Path | None]:
    """(reviewer folderPath of the frames or None if encrypted, local frames folder or None)."""
    src = ((data.get("sourceConnection") or {}).get("providerOptions")) or {}
    tgt = ((data.get("targetConnection") or {}).get("providerOptions")) or {}
    folder = src.get("folderPath") if isinstance(src.get("folderPath"), str) else None
    if folder is None:
        return None, None
    if not is_windows_path(folder) and Path(folder).is_dir():
        return folder, Path(folder)  # opened where the reviewer works
    target = tgt.get("folderPath")
    if isinstance(target, str) and is_windows_path(target) == is_windows_path(folder):
        # The target folder is here: map the frames folder relative to it.
        pathmod = ntpath if is_windows_path(folder) else posixpath
        try:
            rel = pathmod.relpath(folder, target)
        except ValueError:
            return folder, None
        return folder, Path(os.path.normpath(target_dir / Path(*rel.replace("\\", "/").split("/"))))
    return folder, None


def _scores_by_region(target_dir: Path, aid: str) -> dict[str, float] | None:
    path = target_dir / SCORES_DIR / f"{aid}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(r["id"]): float(r["score"]) for r in data["regions"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: ignoring unreadable scores: %s", path, exc)
        return None


def load_project(
    target_dir: str | os.PathLike[str], source_folder: str | os.PathLike[str] | None = None
) -> LoadedProject:
    """Read the VoTT project in ``target_dir``: tags, and per asset of its assets map the local
    image, size, state and boxes (from its ``-asset.json``; none for assets without one) with
    scores when the sidecar exists.

    Images are found under ``source_folder`` when given (by their path relative to the project's
    frames folder, or by name when the project's folder paths are encrypted), else at the
    project's own frames folder or, when that is the reviewer's path on another machine, at the
    same place relative to ``target_dir``. Raises ``ConfigError``/``UserError`` with a fix."""
    target = Path(os.path.abspath(target_dir))
    if not target.is_dir():
        raise ConfigError(
            f"VoTT project folder {target} does not exist; pass the folder holding the .vott file"
        )
    files = sorted(target.glob("*.vott"))
    if not files:
        raise ConfigError(f"{target} holds no .vott project file; pass VoTT's target folder of the project")
    if len(files) > 1:
        raise ConfigError(
            f"{target} holds several projects ({', '.join(p.name for p in files)}); keep one per folder"
        )
    data = _read_json(files[0])
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise UserError(f"{files[0]} is not a VoTT 2 project (no 'name'); open and save it in VoTT 2 first")
    folder, local_frames = _local_source_folder(target, data)
    encrypted = folder is None
    source = Path(os.path.abspath(source_folder)) if source_folder is not None else local_frames
    if source is not None and not source.is_dir():
        raise ConfigError(
            f"source folder {source} does not exist; pass the folder holding the project's frames"
        )
    tags = [str(t["name"]) for t in data.get("tags") or [] if isinstance(t, dict) and t.get("name")]
    assets_map: dict[str, Any] = data["assets"] if isinstance(data.get("assets"), dict) else {}
    loaded: list[LoadedAsset] = []
    for aid, entry in assets_map.items():
        if not isinstance(entry, dict) or entry.get("type") not in (1, None):
            continue  # videos and video frames: not supported here
        asset = entry
        boxes = RegionBoxes(as_boxes([]), [], [])
        asset_path = target / f"{aid}{ASSET_SUFFIX}"
        if asset_path.is_file():
            meta = _read_json(asset_path)
            try:
                asset = meta["asset"] if isinstance(meta.get("asset"), dict) else entry
                boxes = parse_regions(meta.get("regions"))
            except (AttributeError, ValueError) as exc:
                raise UserError(f"{asset_path}: {exc}; fix the file in VoTT or remove the asset") from None
        elif entry.get("state") == 2:
            log.warning(
                "%s: asset %s is Tagged but has no asset file; reading it without regions", target, aid
            )
        size: dict[str, Any] = asset["size"] if isinstance(asset.get("size"), dict) else {}
        name = decoded_name(asset)
        image_path: Path | None = None
        if source is not None:
            rel: list[str] | None = None
            if folder is not None and isinstance(asset.get("path"), str):
                with contextlib.suppress(ValueError):
                    native = native_path_from_uri(asset["path"])
                    pathmod = ntpath if is_windows_path(folder) else posixpath
                    relpath = pathmod.relpath(native, folder)
                    if not relpath.startswith(".."):
                        rel = relpath.replace("\\", "/").split("/")
            image_path = source.joinpath(*rel) if rel else source / name
        scores_map = _scores_by_region(target, str(aid))
        scores = None
        if scores_map is not None:
            scores = np.array([scores_map.get(r, np.nan) for r in boxes.region_ids], dtype=np.float32)
        loaded.append(
            LoadedAsset(
                id=str(aid),
                file_name=name,
                image_path=image_path,
                width=int(size["width"]) if size.get("width") else None,
                height=int(size["height"]) if size.get("height") else None,
                state=int(asset.get("state", entry.get("state")) or 0),
                xyxy=boxes.xyxy,
                labels=boxes.labels,
                region_ids=boxes.region_ids,
                scores=scores,
                raw=asset,
            )
        )
    for label in (lab for a in loaded for lab in a.labels):
        if label not in tags:
            tags.append(label)
    return LoadedProject(
        name=str(data["name"]),
        id=str(data.get("id", "")),
        target_dir=target,
        tags=tags,
        assets=loaded,
        source_folder=source,
        encrypted=encrypted,
    )
