"""VoTT 2.2.0 projects: write pre-labelled frames a reviewer opens and corrects in VoTT, and read
them back. The rules come from ``../shared/vott/SPEC.md`` (§7 is the writer's checklist).

- ``paths``: where frames are on the reviewer's machine, and the asset ids VoTT gives them;
- ``asset``: asset files (``{asset, regions, version}``) from detections, boxes from regions;
- ``project_file``: a new ``.vott``, reading one, and agreeing with the asset files after a crash;
- ``records``: what the agent last wrote, so that a reviewer's edits are never overwritten;
- ``writer``: ``VottProject``, the project being written;
- ``reader``: ``load_project``, a project read back for export and training.
"""

from agent.vott.asset import RegionBoxes, asset_json, make_asset, make_regions, parse_regions
from agent.vott.paths import (
    PathMapping,
    asset_format,
    asset_id,
    asset_name,
    decoded_name,
    file_uri,
    is_windows_path,
    join_native,
    native_path_from_uri,
)
from agent.vott.project_file import ASSET_SUFFIX, TAG_COLORS, default_project_name
from agent.vott.reader import LoadedAsset, LoadedProject, load_project
from agent.vott.records import SCORES_DIR
from agent.vott.writer import AssetWrite, VottProject, WriteOutcome

__all__ = [
    "ASSET_SUFFIX",
    "SCORES_DIR",
    "TAG_COLORS",
    "AssetWrite",
    "LoadedAsset",
    "LoadedProject",
    "PathMapping",
    "RegionBoxes",
    "VottProject",
    "WriteOutcome",
    "asset_format",
    "asset_id",
    "asset_json",
    "asset_name",
    "decoded_name",
    "default_project_name",
    "file_uri",
    "is_windows_path",
    "join_native",
    "load_project",
    "make_asset",
    "make_regions",
    "native_path_from_uri",
    "parse_regions",
]
