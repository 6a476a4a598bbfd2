"""What the agent last wrote into a VoTT project, so that a reviewer's work is never overwritten.

VoTT 2.2.0 leaves these traces when a person reviews a project (``../shared/vott/SPEC.md`` §1, §4):

* an asset the reviewer opened is saved again: its ``<id>-asset.json`` is rewritten (4-space
  JSON, moved, retagged, added or deleted regions), or deleted when the reviewer removed every
  region, in which case the project's map entry says Visited (state 1);
* every save rewrites the whole ``<name>.vott`` with ``providerOptions`` encrypted.

The agent keeps a record of its own writes beside the project, in the scores folder VoTT never
reads: per asset the SHA-256 of the asset file it wrote (in the scores sidecar,
``edge-agent-scores/<asset id>.json``, key ``asset_sha256``) and for the project the SHA-256 of
the ``.vott`` it last saved (``edge-agent-state/project.json``). Any difference is the reviewer's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from agent.fsutil import atomic_write_bytes, atomic_write_json
from agent.utc import utc_iso

log = logging.getLogger(__name__)

SCORES_DIR = "edge-agent-scores"
STATE_DIR = "edge-agent-state"  # the agent's own records of a project, beside the scores
PROJECT_RECORD = "project.json"
_VOTT_INDENT = re.compile(rb"^\{\r?\n    \"")  # VoTT writes JSON.stringify(project, null, 4)


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data``, as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def file_sha256_or_none(path: Path) -> str | None:
    """The SHA-256 of a file's bytes, or None when it does not exist."""
    try:
        return sha256_hex(path.read_bytes())
    except FileNotFoundError:
        return None


def read_json_or_none(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable (logged)."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("%s: unreadable (%s); treating it as absent", path, exc)
        return None


class AgentRecords:
    """The agent's own record of a project's files: asset hashes in the scores sidecars
    (``<target>/edge-agent-scores/``), the project's in ``<target>/edge-agent-state/``."""

    def __init__(self, target_dir: Path, *, fsync: bool) -> None:
        self.folder = target_dir / SCORES_DIR
        self.state_folder = target_dir / STATE_DIR
        self.fsync = fsync
        self._folder_made = False

    def sidecar(self, aid: str) -> Path:
        """Path of asset ``aid``'s scores sidecar."""
        return self.folder / f"{aid}.json"

    def written_asset_sha256(self, aid: str) -> str | None:
        """The SHA-256 of the asset file the agent last wrote for ``aid`` (None: it never did, or
        the record predates this check)."""
        data = read_json_or_none(self.sidecar(aid))
        value = data.get("asset_sha256") if isinstance(data, dict) else None
        return value if isinstance(value, str) else None

    def write_sidecar(self, aid: str, record: dict[str, Any], *, fsync: bool) -> None:
        """Write asset ``aid``'s sidecar (scores, model, time and ``asset_sha256``) atomically."""
        if not self._folder_made:
            self.folder.mkdir(exist_ok=True)
            self._folder_made = True
        try:
            atomic_write_json(self.sidecar(aid), record, indent=None, fsync=fsync)
        except FileNotFoundError:  # the folder was removed while running
            self.folder.mkdir(exist_ok=True)
            atomic_write_json(self.sidecar(aid), record, indent=None, fsync=fsync)

    def forget(self, aid: str) -> None:
        """Remove asset ``aid``'s sidecar."""
        self.sidecar(aid).unlink(missing_ok=True)

    def _project_record(self) -> dict[str, Any]:
        data = read_json_or_none(self.state_folder / PROJECT_RECORD)
        return data if isinstance(data, dict) else {}

    def saved_project_sha256(self) -> str | None:
        """The SHA-256 of the ``.vott`` file the agent saved last (None: no record)."""
        value = self._project_record().get("sha256")
        return value if isinstance(value, str) else None

    def reviewer_assets(self) -> set[str]:
        """The asset ids known to be the reviewer's (they were in a project VoTT saved)."""
        value = self._project_record().get("reviewer_assets")
        return {str(v) for v in value} if isinstance(value, list) else set()

    def note_project_saved(self, project_file: Path, data: bytes, reviewer_assets: set[str]) -> None:
        """Record the bytes the agent has just saved as ``project_file``, and the assets that are
        the reviewer's (once VoTT saved them, they stay the reviewer's)."""
        self.state_folder.mkdir(exist_ok=True)
        record = {
            "project": project_file.name,
            "sha256": sha256_hex(data),
            "reviewer_assets": sorted(reviewer_assets),
        }
        atomic_write_bytes(self.state_folder / PROJECT_RECORD, json.dumps(record).encode(), fsync=self.fsync)

    def saved_by_vott(self, project_file: Path, data: bytes, project: dict[str, Any]) -> bool:
        """True when ``project_file`` (whose bytes are ``data``) was saved by someone else than the
        agent since the agent saved it: VoTT, when the reviewer opened the project."""
        recorded = self.saved_project_sha256()
        if recorded is not None:
            return recorded != sha256_hex(data)
        # No record (a project from an older agent, or not ours): VoTT's own save shows.
        return has_encrypted_options(project) or bool(_VOTT_INDENT.match(data))


def has_encrypted_options(project: dict[str, Any]) -> bool:
    """True when a connection's ``providerOptions`` are encrypted: only VoTT writes them so."""
    for key in ("sourceConnection", "targetConnection"):
        connection = project.get(key)
        options = connection.get("providerOptions") if isinstance(connection, dict) else None
        if isinstance(options, dict) and "encrypted" in options:
            return True
    return False


def sidecar_record(
    aid: str,
    image: str,
    model: str | None,
    timestamp: float | None,
    regions: list[dict[str, Any]],
    asset_bytes: bytes,
) -> dict[str, Any]:
    """The scores sidecar of one asset: its ``regions`` (each region's id, label, score and box) and
    the hash of the asset file written (``asset_bytes``)."""
    return {
        "asset_id": aid,
        "image": image,
        "model": model,
        "timestamp": utc_iso(timestamp) if timestamp is not None else None,
        "asset_sha256": sha256_hex(asset_bytes),
        "regions": regions,
    }
