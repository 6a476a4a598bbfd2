"""The model catalog: models the agent can fetch by name, each pinned to its upstream files.

The entries are data (``agent/data/model-catalog.yaml``, described at its top); this module
reads and validates them, and tells whether a model file is the bundled DEMO model.
Where installed models live and how a name becomes a file: ``agent.detect.model_store``;
downloading: ``agent.detect.fetch``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.bundled import BUNDLED_DATA
from agent.config.base import StrictModel
from agent.detect.model import ModelCard
from agent.errors import ConfigError
from agent.fsutil import file_sha256

CATALOG_FILE = BUNDLED_DATA / "model-catalog.yaml"
MODEL_FILE = "model.tflite"
CARD_FILE = "model.yaml"
PACKAGE_SCHEME = "package:"
# Licenses that need no --accept-license: permissive, no conditions on running or shipping the agent.
PERMISSIVE_LICENSES = frozenset({"Apache-2.0", "MIT"})
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
FETCH_REAL_MODEL = "edge-agent models fetch print3d --accept-license"


class FileSpec(StrictModel):
    """One file an entry installs: where it comes from and what it must be."""

    url: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0)
    """Size in bytes."""

    @property
    def packaged(self) -> Path | None:
        """The file inside the agent's package for a ``package:`` URL, else None."""
        if not self.url.startswith(PACKAGE_SCHEME):
            return None
        return BUNDLED_DATA / self.url.removeprefix(PACKAGE_SCHEME)


class CatalogEntry(StrictModel):
    """One model of the catalog (the keys are described in the catalog file)."""

    name: str = Field(pattern=NAME_PATTERN.pattern)
    description: str
    version: str
    license: str
    license_url: str
    source: str
    demo: bool = False
    files: dict[str, FileSpec]
    card: ModelCard | None = None
    known_answers: str | None = None

    @field_validator("files")
    @classmethod
    def _plain_file_names(cls, files: dict[str, FileSpec]) -> dict[str, FileSpec]:
        for name in files:
            if "/" in name or name.startswith(".") or not name:
                raise ValueError(f"file name {name!r} must be a plain name (no folders, no leading dot)")
        if MODEL_FILE not in files:
            raise ValueError(f"files must include {MODEL_FILE}")
        return files

    @model_validator(mode="after")
    def _one_card(self) -> CatalogEntry:
        if (self.card is None) == (CARD_FILE not in self.files):
            raise ValueError(f"give either card or a {CARD_FILE} in files, exactly one")
        if self.known_answers is not None and self.known_answers not in self.files:
            raise ValueError(f"known_answers names {self.known_answers!r}, which is not one of files")
        return self

    @property
    def permissive(self) -> bool:
        """True when fetching needs no ``--accept-license``."""
        return self.license in PERMISSIVE_LICENSES

    @property
    def size(self) -> int:
        """Bytes of all its files together."""
        return sum(spec.size for spec in self.files.values())

    @property
    def bundled_model(self) -> Path | None:
        """The model file inside the package when the entry ships with the agent."""
        return self.files[MODEL_FILE].packaged

    def fetch_command(self) -> str:
        """The command line that installs this entry."""
        flag = "" if self.permissive else " --accept-license"
        return f"edge-agent models fetch {self.name}{flag}"

    def card_to_write(self) -> ModelCard | None:
        """The card ``fetch`` writes as model.yaml, with the entry's identity filled in (None when
        a model.yaml is one of the files)."""
        if self.card is None:
            return None
        identity = {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "license": self.license,
            "source": self.source,
        }
        own = self.card.model_dump(exclude_unset=True)
        return ModelCard.model_validate({**identity, **own})


class Catalog(StrictModel):
    """All entries, by name."""

    entries: dict[str, CatalogEntry]

    def get(self, name: str) -> CatalogEntry:
        """The entry called ``name``; ``ConfigError`` naming the known ones otherwise."""
        entry = self.entries.get(name)
        if entry is None:
            raise ConfigError(
                f"no model called {name!r} in the catalog; known: {', '.join(self.entries)} "
                "(edge-agent models list)"
            )
        return entry

    def demo(self) -> CatalogEntry | None:
        """The bundled DEMO model's entry."""
        return next((e for e in self.entries.values() if e.demo), None)


@functools.cache
def load_catalog(path: Path = CATALOG_FILE) -> Catalog:
    """Read and validate the catalog file (cached: it is part of the installed package)."""
    from agent.config.loading import parse_yaml_text, validate_data  # late: agent.config imports the detector

    data, lines = parse_yaml_text(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must map model names to entries")
    named = {"entries": {k: {"name": k, **v} if isinstance(v, dict) else v for k, v in data.items()}}
    shifted = {("entries", *key): line for key, line in lines.items()}
    return validate_data(named, Catalog, str(path), shifted)


def file_matches(path: Path, spec: FileSpec) -> Literal["ok", "missing", "size", "sha256"]:
    """How ``path`` compares with ``spec``: ok, missing, a wrong size, or a wrong sha256."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if size != spec.size:
        return "size"
    return "ok" if file_sha256(path) == spec.sha256 else "sha256"


@functools.cache
def _is_demo_file(path: Path, size: int, mtime_ns: int) -> bool:
    demo = load_catalog().demo()
    if demo is None:
        return False
    return demo.bundled_model == path or file_matches(path, demo.files[MODEL_FILE]) == "ok"


def demo_notice(model_path: Path) -> str | None:
    """A one-line warning when ``model_path`` is the bundled DEMO model (the package's file or a
    copy of it), with the command that fetches the real one; None for any other model."""
    path = model_path.resolve()
    try:
        stat = path.stat()
    except OSError:
        return None
    if not _is_demo_file(path, stat.st_size, stat.st_mtime_ns):
        return None
    return f"DEMO model, trained on generated frames only; for a real printer: {FETCH_REAL_MODEL}"
