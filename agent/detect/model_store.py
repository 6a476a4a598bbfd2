"""Where fetched models live, and how a catalog name (``detector.model: print3d``) becomes a file.

The models folder, first match wins:

1. ``--dir DIR`` on the ``models`` command;
2. ``$EDGE_AGENT_MODELS_DIR``;
3. a system install: ``/var/lib/edge-agent/models`` when ``/var/lib/edge-agent`` (the
   service's state folder, created by the installer, owned by the service user ``edge-agent``)
   exists and this process may write to it: root, or the service user itself;
4. a user install: ``$XDG_DATA_HOME/edge-agent/models`` (default ``~/.local/share/edge-agent/models``).

A name is looked up in that folder, then in the other of 3 and 4 that exists (so a user in
the ``edge-agent`` group finds the system's models), then, for the DEMO model, in the package.
``EDGE_AGENT_MODELS_DIR`` replaces the search: only that folder is used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.bundled import BUNDLED_MODEL
from agent.config.detector import DetectorSettings
from agent.detect.catalog import (
    CARD_FILE,
    MODEL_FILE,
    NAME_PATTERN,
    CatalogEntry,
    file_matches,
    load_catalog,
)
from agent.errors import ConfigError, UserError

SYSTEM_STATE_DIR = Path("/var/lib/edge-agent")
MODELS_DIR_ENV = "EDGE_AGENT_MODELS_DIR"


class ModelNotInstalled(ConfigError):
    """A config names a catalog model that is not in any models folder."""

    def __init__(self, entry: CatalogEntry, searched: list[Path]) -> None:
        where = " or ".join(str(d) for d in searched)
        license_note = "" if entry.permissive else f" ({entry.license}, read {entry.license_url})"
        super().__init__(
            f"model {entry.name} is not installed (looked in {where}); fetch it with: "
            f"{entry.fetch_command()}{license_note}"
        )
        self.entry = entry


def user_models_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/edge-agent/models``, by default ``~/.local/share/edge-agent/models``."""
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path(env.get("HOME") or Path.home()) / ".local" / "share"
    return root / "edge-agent" / "models"


def _system_install(state_dir: Path) -> bool:
    return state_dir.is_dir() and os.access(state_dir, os.W_OK)


def models_dir(env: Mapping[str, str] | None = None, state_dir: Path = SYSTEM_STATE_DIR) -> Path:
    """The folder ``models fetch`` installs into when ``--dir`` is not given (the module's rule)."""
    env = os.environ if env is None else env
    if env.get(MODELS_DIR_ENV):
        return Path(env[MODELS_DIR_ENV]).expanduser()
    return state_dir / "models" if _system_install(state_dir) else user_models_dir(env)


def search_dirs(env: Mapping[str, str] | None = None, state_dir: Path = SYSTEM_STATE_DIR) -> list[Path]:
    """The folders a model name is looked up in, in order (the module's rule)."""
    env = os.environ if env is None else env
    first = models_dir(env, state_dir)
    if env.get(MODELS_DIR_ENV):
        return [first]
    others = [user_models_dir(env), state_dir / "models"]
    return [first, *(d for d in others if d != first and d.is_dir())]


def installed_folder(entry: CatalogEntry, dirs: list[Path]) -> Path | None:
    """The first ``<dir>/<name>`` of ``dirs`` holding the entry's model file."""
    return next((d / entry.name for d in dirs if (d / entry.name / MODEL_FILE).is_file()), None)


def find_model(name: str, dirs: list[Path] | None = None) -> Path:
    """The model file of catalog model ``name``: the installed copy, else the package's own
    (the DEMO model); ``ModelNotInstalled`` with the fetch command otherwise."""
    entry = load_catalog().get(name)
    dirs = search_dirs() if dirs is None else dirs
    folder = installed_folder(entry, dirs)
    if folder is not None:
        return folder / MODEL_FILE
    if entry.bundled_model is not None:
        return entry.bundled_model
    raise ModelNotInstalled(entry, dirs)


def looks_like_name(value: str) -> bool:
    """True when ``value`` reads as a catalog name rather than a path (no folder, no .tflite)."""
    return bool(NAME_PATTERN.fullmatch(value)) and not value.endswith(".tflite")


def configured_model(settings: DetectorSettings) -> Path:
    """The model file ``settings`` name: ``model`` as a path or a catalog name (``ConfigError`` with
    the fetch command when that model is not installed); the bundled DEMO model when unset."""
    return model_file(settings.model) if settings.model else BUNDLED_MODEL


def model_file(value: str) -> Path:
    """The file a ``detector.model`` / ``--model`` value names: an existing file as given, else a
    catalog model by name (a file of that name wins over the catalog)."""
    path = Path(value).expanduser()
    if path.is_file() or not looks_like_name(value):
        return path
    catalog = load_catalog()
    if value not in catalog.entries:
        raise ConfigError(
            f"model {value!r} is neither a file nor a catalog model ({', '.join(catalog.entries)}); "
            "give a .tflite path or a name from `edge-agent models list`"
        )
    return find_model(value)


@dataclass
class Copy:
    """One installed copy of an entry: a models folder's ``<dir>/<name>``, or the package."""

    entry: CatalogEntry
    folder: Path
    bundled: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def path_of(self, file_name: str) -> Path:
        """Where the entry's ``file_name`` is in this copy."""
        packaged = self.entry.files[file_name].packaged if self.bundled else None
        return packaged if packaged is not None else self.folder / file_name

    @property
    def model(self) -> Path:
        """The model file of this copy."""
        return self.path_of(MODEL_FILE)


def installed_copies(entry: CatalogEntry, dirs: list[Path]) -> list[Copy]:
    """Every copy of ``entry`` in ``dirs`` (and the package's, for the DEMO model)."""
    copies = [Copy(entry, d / entry.name) for d in dirs if (d / entry.name / MODEL_FILE).is_file()]
    if entry.bundled_model is not None:
        copies.append(Copy(entry, entry.bundled_model.parent, bundled=True))
    return copies


_MISMATCH = {
    "missing": "is missing",
    "size": "has the wrong size",
    "sha256": "has the wrong sha256 (damaged or replaced)",
}


def verify_copy(copy: Copy, *, load: bool = True) -> Copy:
    """Check a copy's files against the catalog's sha256 and size, its card, and (``load``) that
    the model loads as a detector with that card; fills ``copy.problems`` and ``copy.notes``."""
    from agent.detect.model import load_card

    for file_name, spec in copy.entry.files.items():
        outcome = file_matches(copy.path_of(file_name), spec)
        if outcome != "ok":
            copy.problems.append(f"{file_name} {_MISMATCH[outcome]}")
    expected_card = copy.entry.card_to_write()
    if expected_card is not None:
        try:
            card = load_card(copy.path_of(CARD_FILE))
        except UserError as exc:
            copy.problems.append(f"{CARD_FILE}: {exc}")
        else:
            if card != expected_card:
                copy.notes.append(
                    f"{CARD_FILE} differs from the catalog's card (edited; fetch --force restores it)"
                )
    if load and not copy.problems:
        from agent.detect.detector import Detector

        try:
            Detector(DetectorSettings(model=str(copy.model)), warm_up=False)
        except UserError as exc:
            copy.problems.append(f"does not load as a detector: {exc}")
    return copy


def with_installed_model(settings: DetectorSettings) -> tuple[DetectorSettings, str | None]:
    """``settings`` and None when its model resolves to a file. When ``model`` names a catalog
    model that is not installed: ``ModelNotInstalled``, or, with ``fallback_model`` set, settings
    running that model on the CPU instead and the reason (a warning with the fetch command)."""
    try:
        configured_model(settings)
    except ModelNotInstalled as exc:
        if not settings.fallback_model:
            raise
        fallback = settings.model_copy(
            update={"model": settings.fallback_model, "fallback_model": None, "edgetpu": None}
        )
        return fallback, f"{exc}; running the fallback model {settings.fallback_model} instead"
    return settings, None
