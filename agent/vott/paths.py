"""Where frames are on the reviewer's machine and the ids VoTT 2.2.0 gives them.

An asset id is ``md5("file:" + encodeURI(reviewer path with "/" separators))`` with ``#`` ->
``%23`` and ``?`` -> ``%3F``, exactly what VoTT 2.2.0's folder scan computes, so VoTT does not
list a frame twice (``../shared/vott/SPEC.md`` §3.4). Every path written into a project is the
reviewer's, in the reviewer's OS syntax (Windows when the reviewer root starts with a drive
letter or ``\\\\server``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ntpath
import os
import posixpath
import re
import secrets
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ConfigError, UserError

# JavaScript encodeURI leaves these unescaped besides letters, digits and "-_.~"; VoTT then escapes
# "#" and "?" itself (common/utils.ts encodeFileURI), so neither is here.
# JavaScript encodeURI leaves these unescaped besides letters, digits and "-_.~"; VoTT then escapes
# "#" and "?" itself (common/utils.ts encodeFileURI), so neither is here.
_ENCODE_URI_SAFE = ";,/:@&=+$!*'()"

# Extensions VoTT lists as images (services/assetService.ts getAssetType); TIFF is listed but not shown.
IMAGE_FORMATS = frozenset({"gif", "jpg", "jpeg", "png", "bmp"})
WINDOWS_FILE_CHARS = set('\\/:*?"<>|')  # not allowed in a Windows file name

_WINDOWS_ROOT = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


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


@functools.lru_cache(maxsize=256)  # a frame's id is asked for several times as it is written
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


def short_id(text: str) -> str:
    """A VoTT-style short id (9 characters of ``[A-Za-z0-9_-]``) derived from ``text``."""
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


def new_short_id() -> str:
    """A new random VoTT-style short id (9 characters of ``[A-Za-z0-9_-]``), for a new project or
    connection: VoTT's recent-projects list is keyed by project id, so two projects must never share one."""
    return secrets.token_urlsafe(7)[:9]


def reviewer_frame_path(local: Path, frames_dir: Path, reviewer_frames_dir: str, windows: bool) -> str:
    """The reviewer's native path of the frame ``local`` (absolute), which must sit directly in
    ``frames_dir`` (seen by the reviewer as ``reviewer_frames_dir``) and be an image VoTT shows
    under a name the reviewer's OS can hold (``windows``); ``UserError`` saying why not."""
    if local.parent != frames_dir:
        raise UserError(
            f"{local} is not directly in the frames folder {frames_dir}; VoTT 2.2.0 only lists the "
            "top level of its source folder, so save frames there"
        )
    fmt = asset_format(local.name).lower()
    if fmt not in IMAGE_FORMATS:
        raise UserError(
            f"{local.name}: VoTT shows only {', '.join(sorted(IMAGE_FORMATS))} images; save as .jpg"
        )
    if windows and set(local.name) & WINDOWS_FILE_CHARS:
        raise UserError(
            f"{local.name!r} cannot exist on the reviewer's Windows computer (it contains one of "
            '\\ / : * ? " < > |); rename the frame'
        )
    return join_native(reviewer_frames_dir, local.name)
