"""The ``<name>.vott`` project file: a new one, reading one, and making it agree with the asset
files on disk after a crash (``../shared/vott/SPEC.md`` §2, §7)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.errors import ConfigError, UserError
from agent.vott.asset import VOTT_VERSION, parse_regions
from agent.vott.paths import new_short_id
from agent.vott.records import AgentRecords, file_sha256_or_none

log = logging.getLogger(__name__)

ASSET_SUFFIX = "-asset.json"
# VoTT's own palette (src/react/components/common/tagColors.json); tag i gets colour i mod 20.
TAG_COLORS: tuple[str, ...] = (
    "#5db300", "#e81123", "#6917aa", "#015cda", "#4894fe", "#6b849c", "#70c400", "#f7929a", "#257ffe",
    "#ddabe9", "#ff8c00", "#386300", "#b40e1b", "#68217a", "#33cccc", "#016afe", "#595959", "#808080",
    "#990066", "#00bcf2",
)  # fmt: skip
_FORBIDDEN_NAME_CHARS = set('\\/:*?"<>|')  # projectForm.json: not allowed in a project name


def check_project_name(name: str) -> str:
    """``name`` when VoTT can save a project under it; else ``ConfigError`` saying why."""
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


def choose_project_file(target_dir: Path, name: str | None) -> tuple[str, Path]:
    """The project's name and ``.vott`` file in ``target_dir``: ``name``, or the one project there,
    or a name from the folder's; ``ConfigError`` when the folder holds another project or several."""
    existing = sorted(target_dir.glob("*.vott"))
    if name is None:
        if len(existing) > 1:
            raise ConfigError(
                f"{target_dir} holds several projects ({', '.join(p.name for p in existing)}); "
                "pass the project name to choose one"
            )
        name = existing[0].stem if existing else default_project_name(target_dir)
    name = check_project_name(name)
    project_file = target_dir / f"{name}.vott"
    others = [p for p in existing if p != project_file]
    if others and not project_file.exists():
        raise ConfigError(
            f"{target_dir} already holds the VoTT project {others[0].name}; VoTT expects one project "
            "per target folder, so use another folder or that project's name"
        )
    return name, project_file


def merge_into_reviewers(
    ours: dict[str, Any], theirs: dict[str, Any], ensure_tag: Callable[[str, dict[str, Any]], None]
) -> dict[str, Any]:
    """The project VoTT saved (``theirs``) with the assets and tags only the agent's copy (``ours``)
    has added to it: what VoTT saved wins, nothing of it is changed."""
    for aid, entry in ours["assets"].items():
        theirs["assets"].setdefault(aid, entry)
    theirs["tags"] = [t for t in theirs.get("tags") or [] if isinstance(t, dict) and t.get("name")]
    for tag in ours["tags"]:
        ensure_tag(tag["name"], theirs)
    return theirs


def read_project_json(path: Path, raw: bytes | None = None) -> Any:
    """A JSON file's content (``raw``: its bytes, already read); ``UserError`` when unreadable."""
    try:
        return json.loads((path.read_bytes() if raw is None else raw).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}; restore the file or remove it") from None


def new_project(
    name: str, security_token: str, frames_folder: str, target_folder: str, description: str | None
) -> dict[str, Any]:
    """A new, empty VoTT 2.2.0 project with unique ids (VoTT's recent-projects list is keyed by
    id); ``frames_folder`` and ``target_folder`` are the reviewer's paths."""

    def connection(role: str, folder: str) -> dict[str, Any]:
        return {
            "name": f"{name} {role}",
            "providerType": "localFileSystemProxy",
            "providerOptions": {"folderPath": folder},
            "id": new_short_id(),
        }

    data: dict[str, Any] = {
        "name": name,
        "securityToken": security_token,
        "sourceConnection": connection("frames", frames_folder),
        "targetConnection": connection("target", target_folder),
        "videoSettings": {"frameExtractionRate": 15},
        "tags": [],
        "id": new_short_id(),
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


def reconcile(
    data: dict[str, Any],
    target_dir: Path,
    frames_dir: Path,
    records: AgentRecords,
    reviewer_owned: set[str],
    ensure_tag: Callable[[str, dict[str, Any]], None],
) -> int:
    """Make the assets map of ``data`` agree with the asset files after a crash between the two
    writes, without touching the reviewer's work (asset ids in ``reviewer_owned``, which this
    extends with asset files the agent did not write). Returns how many changes were made."""
    assets: dict[str, Any] = data["assets"]
    on_disk = {p.name[: -len(ASSET_SUFFIX)]: p for p in target_dir.glob(f"*{ASSET_SUFFIX}")}
    _drop_emptied(on_disk, assets, frames_dir, records, reviewer_owned)
    changes = 0
    for aid, entry in list(assets.items()):
        if (
            isinstance(entry, dict)
            and entry.get("state") == 2
            and aid not in on_disk
            and aid not in reviewer_owned
        ):
            log.warning("%s: asset %s has no asset file any more; removing it", target_dir, aid)
            del assets[aid]
            changes += 1
    for aid, path in on_disk.items():
        if aid not in assets and _list_orphan(data, aid, path, records, reviewer_owned, ensure_tag):
            changes += 1
    if data.get("lastVisitedAssetId") not in assets:
        data.pop("lastVisitedAssetId", None)
        if assets:
            data["lastVisitedAssetId"] = next(iter(assets))
            changes += 1
    return changes


def _drop_emptied(
    on_disk: dict[str, Path],
    assets: dict[str, Any],
    frames_dir: Path,
    records: AgentRecords,
    reviewer_owned: set[str],
) -> None:
    """Remove the agent's asset files (from disk and ``on_disk``) that a power cut left empty, or
    whose frame it left empty."""
    for aid, path in list(on_disk.items()):
        if aid in reviewer_owned:
            continue
        if path.stat().st_size == 0 or _frame_emptied(frames_dir, path, assets.get(aid)):
            log.warning("%s: empty asset or frame file (power cut?); removing the asset", path)
            path.unlink()
            records.forget(aid)
            del on_disk[aid]


def _list_orphan(
    data: dict[str, Any],
    aid: str,
    path: Path,
    records: AgentRecords,
    reviewer_owned: set[str],
    ensure_tag: Callable[[str, dict[str, Any]], None],
) -> bool:
    """Put an asset file the map does not list (a crash before the project save) into the map;
    False when the file is unusable."""
    try:
        meta = read_project_json(path)
        asset = meta["asset"]
        parse_regions(meta["regions"])
        if asset["id"] != aid:
            raise ValueError("asset id differs from the file name")
    except (UserError, KeyError, TypeError, ValueError) as exc:
        log.warning("%s: unusable asset file left as it is: %s", path, exc)
        return False
    if records.written_asset_sha256(aid) != file_sha256_or_none(path):
        reviewer_owned.add(aid)  # saved by VoTT, whose project save did not follow
    data["assets"][aid] = asset
    for tag in (t for r in meta["regions"] for t in r["tags"]):
        ensure_tag(tag, data)
    return True


def _frame_emptied(frames_dir: Path, asset_path: Path, entry: Any) -> bool:
    """True when the asset's frame in ``frames_dir`` exists but is empty (its data never reached
    the device); frames kept elsewhere are not checked. ``entry``: the asset's entry in the
    project's map, when it has one (saves reading the asset file)."""
    try:
        name = entry["name"] if isinstance(entry, dict) else read_project_json(asset_path)["asset"]["name"]
        frame = frames_dir / str(name)
        return frame.is_file() and frame.stat().st_size == 0
    except (UserError, KeyError, TypeError, OSError):
        return False
