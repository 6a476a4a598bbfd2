"""A reviewer's edits made exactly as VoTT 2.2.0 saves them (``../shared/vott/SPEC.md`` §1, §4):

- opening an asset and changing its regions rewrites ``<id>-asset.json`` with
  ``JSON.stringify(metadata, null, 4)`` (state 2 while it has regions);
- removing every region sets the asset Visited (state 1) and DELETES its asset file;
- every save rewrites the whole ``<name>.vott`` from VoTT's memory, 4-space JSON, with the three
  ``providerOptions`` encrypted with the security token's key, the asset map entry updated and
  ``lastVisitedAssetId`` set to the asset just visited.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.helpers import load_validator

KEY = "q0ZkR0n4o6cVx2uZ9Yy3m1B8c5W7e0Tt2Lp4Hs6Jd8A="  # a VoTT-generated key: base64 of 32 bytes


def _js_stringify(obj: Any) -> bytes:
    return json.dumps(obj, indent=4, ensure_ascii=False).encode("utf-8")


class Reviewer:
    """Edits one VoTT project in ``target`` as a person in VoTT 2.2.0 would; ``shared`` gives the
    validator's encryption (the same format as VoTT's crypto.ts)."""

    def __init__(self, target: Path, shared: Path) -> None:
        self.target = target
        [self.project_file] = target.glob("*.vott")
        self.project = json.loads(self.project_file.read_text(encoding="utf-8"))
        self.crypto = load_validator(shared)
        self._plain: dict[str, Any] = {}

    def asset_file(self, aid: str) -> Path:
        return self.target / f"{aid}-asset.json"

    def metadata(self, aid: str) -> dict[str, Any]:
        return json.loads(self.asset_file(aid).read_text(encoding="utf-8"))

    def _save_asset(self, aid: str, meta: dict[str, Any]) -> None:
        meta["asset"]["state"] = 2 if meta["regions"] else 1
        if meta["regions"]:
            self.asset_file(aid).write_bytes(_js_stringify(meta))
        else:
            self.asset_file(aid).unlink(missing_ok=True)
        self.project["assets"][aid] = copy.deepcopy(meta["asset"])
        self.project["lastVisitedAssetId"] = aid
        self.save_project()

    def move_and_retag(self, aid: str, dx: float, new_tag: str) -> dict[str, Any]:
        """Drags the first box ``dx`` pixels right and gives it another tag."""
        meta = self.metadata(aid)
        region = meta["regions"][0]
        region["boundingBox"]["left"] += dx
        for point in region["points"]:
            point["x"] += dx
        region["tags"] = [new_tag]
        self._ensure_tag(new_tag)
        self._save_asset(aid, meta)
        return meta

    def delete_box(self, aid: str) -> dict[str, Any]:
        """Deletes the last box (a false positive)."""
        meta = self.metadata(aid)
        meta["regions"].pop()
        self._save_asset(aid, meta)
        return meta

    def add_box(self, aid: str, box_ltwh: tuple[float, float, float, float], tag: str) -> dict[str, Any]:
        """Draws a new box (VoTT gives it a shortid)."""
        meta = self.metadata(aid)
        left, top, width, height = box_ltwh
        meta["regions"].append(
            {
                "id": "Hk3xQ9_rP",
                "type": "RECTANGLE",
                "tags": [tag],
                "boundingBox": {"height": height, "width": width, "left": left, "top": top},
                "points": [
                    {"x": left, "y": top},
                    {"x": left + width, "y": top},
                    {"x": left + width, "y": top + height},
                    {"x": left, "y": top + height},
                ],
            }
        )
        self._ensure_tag(tag)
        self._save_asset(aid, meta)
        return meta

    def empty(self, aid: str) -> None:
        """Removes every box: VoTT sets the asset Visited and deletes its asset file."""
        meta = self.metadata(aid)
        meta["regions"] = []
        self._save_asset(aid, meta)

    def _ensure_tag(self, tag: str) -> None:
        if not any(t["name"] == tag for t in self.project["tags"]):
            self.project["tags"].append({"name": tag, "color": "#6917aa"})

    def save_project(self) -> None:
        """Writes the project as VoTT does: providerOptions encrypted, 4-space JSON."""
        for key in ("sourceConnection", "targetConnection", "exportFormat"):
            section = self.project[key]
            options = section["providerOptions"]
            if "encrypted" not in options:
                self._plain[key] = options
                section["providerOptions"] = {"encrypted": self.crypto.encrypt_secure_string(options, KEY)}
        self.project_file.write_bytes(_js_stringify(self.project))

    def snapshot(self) -> dict[str, bytes | None]:
        """Every file of the target folder VoTT owns (project and asset files), as bytes."""
        files = {p.name: p.read_bytes() for p in self.target.glob("*-asset.json")}
        files[self.project_file.name] = self.project_file.read_bytes()
        return files
