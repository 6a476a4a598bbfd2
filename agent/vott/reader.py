"""Reading a VoTT project back (for export, evaluation and training): tags, and per asset the
local image, its size, state, boxes and the agent's scores when the sidecar has them."""

from __future__ import annotations

import contextlib
import json
import logging
import ntpath
import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.boxes import as_boxes
from agent.errors import ConfigError, UserError
from agent.vott.asset import RegionBoxes, parse_regions
from agent.vott.paths import decoded_name, is_windows_path, native_path_from_uri
from agent.vott.project_file import ASSET_SUFFIX, read_project_json
from agent.vott.records import SCORES_DIR

log = logging.getLogger(__name__)


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
        return {str(r["id"]): float(r["score"]) for r in data["regions"] if r.get("score") is not None}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: ignoring unreadable scores: %s", path, exc)
        return None


def _project_data(target: Path) -> tuple[Path, dict[str, Any]]:
    """The one ``.vott`` file in ``target`` and its content; ``ConfigError``/``UserError`` with a fix."""
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
    data = read_project_json(files[0])
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise UserError(f"{files[0]} is not a VoTT 2 project (no 'name'); open and save it in VoTT 2 first")
    return files[0], data


def _asset_and_boxes(target: Path, aid: str, entry: dict[str, Any]) -> tuple[dict[str, Any], RegionBoxes]:
    """An asset as its asset file has it (the map entry when there is no file), and its boxes."""
    asset_path = target / f"{aid}{ASSET_SUFFIX}"
    if not asset_path.is_file():
        if entry.get("state") == 2:
            log.warning(
                "%s: asset %s is Tagged but has no asset file; reading it without regions", target, aid
            )
        return entry, RegionBoxes(as_boxes([]), [], [])
    meta = read_project_json(asset_path)
    try:
        asset = meta["asset"] if isinstance(meta.get("asset"), dict) else entry
        return asset, parse_regions(meta.get("regions"))
    except (AttributeError, ValueError) as exc:
        raise UserError(f"{asset_path}: {exc}; fix the file in VoTT or remove the asset") from None


def _image_path(asset: dict[str, Any], folder: str | None, source: Path) -> Path:
    """Where an asset's image is under the local ``source`` folder: at its path relative to the
    project's frames ``folder`` (the reviewer's), else by name."""
    if folder is not None and isinstance(asset.get("path"), str):
        with contextlib.suppress(ValueError):
            native = native_path_from_uri(asset["path"])
            pathmod = ntpath if is_windows_path(folder) else posixpath
            relpath = pathmod.relpath(native, folder)
            if not relpath.startswith(".."):
                return source.joinpath(*relpath.replace("\\", "/").split("/"))
    return source / decoded_name(asset)


def _loaded_asset(
    target: Path, aid: str, entry: dict[str, Any], folder: str | None, source: Path | None
) -> LoadedAsset:
    asset, boxes = _asset_and_boxes(target, aid, entry)
    size: dict[str, Any] = asset["size"] if isinstance(asset.get("size"), dict) else {}
    scores_map = _scores_by_region(target, aid)
    scores = None
    if scores_map is not None:
        scores = np.array([scores_map.get(r, np.nan) for r in boxes.region_ids], dtype=np.float32)
    return LoadedAsset(
        id=aid,
        file_name=decoded_name(asset),
        image_path=_image_path(asset, folder, source) if source is not None else None,
        width=int(size["width"]) if size.get("width") else None,
        height=int(size["height"]) if size.get("height") else None,
        state=int(asset.get("state", entry.get("state")) or 0),
        xyxy=boxes.xyxy,
        labels=boxes.labels,
        region_ids=boxes.region_ids,
        scores=scores,
        raw=asset,
    )


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
    _, data = _project_data(target)
    folder, local_frames = _local_source_folder(target, data)
    source = Path(os.path.abspath(source_folder)) if source_folder is not None else local_frames
    if source is not None and not source.is_dir():
        raise ConfigError(
            f"source folder {source} does not exist; pass the folder holding the project's frames"
        )
    tags = [str(t["name"]) for t in data.get("tags") or [] if isinstance(t, dict) and t.get("name")]
    assets_map: dict[str, Any] = data["assets"] if isinstance(data.get("assets"), dict) else {}
    loaded = [
        _loaded_asset(target, str(aid), entry, folder, source)
        for aid, entry in assets_map.items()
        if isinstance(entry, dict) and entry.get("type") in (1, None)  # videos and their frames: not here
    ]
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
        encrypted=folder is None,
    )
