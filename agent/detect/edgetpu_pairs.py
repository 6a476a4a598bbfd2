"""The Edge TPU runtime pair: which TFLite runtime and libedgetpu are installed, and whether they match.

``libedgetpu.so`` is built against one TensorFlow commit and works only with TFLite runtimes whose
delegate ABI matches it; a mismatch does not raise an error, it segfaults on invoke. The pair that
``scripts/install-pi.sh --edgetpu`` installs and the rules that judge any other pair live in one file,
``agent/data/edgetpu-pairs.json`` (see docs/coral.md). This module reads it, finds what is installed
(the library from dpkg's database, the runtimes from their Python distributions) and judges the pair.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from agent.bundled import BUNDLED_DATA

PAIRS_FILE = BUNDLED_DATA / "edgetpu-pairs.json"
LIBRARY_PACKAGES = ("libedgetpu1-std", "libedgetpu1-max")
LIBRARY_DIRS = ("usr/lib", "usr/local/lib", "usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu")
RUNTIME_DISTRIBUTIONS = {
    "ai_edge_litert": ("ai-edge-litert",),
    "tflite_runtime": ("tflite-runtime",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64"),
}
# Coral's own builds are numbered like 14.1, 15.0, 16.0 or 12.1-1: built against TensorFlow 2.5.
CORAL_VERSION = re.compile(r"^\d+\.\d+(-\d+)?$")
CORAL_TF = "2.5.0"
# The maintained fork's builds name their TensorFlow: 16.0tf2.19.1-1.
FORK_VERSION = re.compile(r"tf(\d+\.\d+(?:\.\d+)?)", re.IGNORECASE)

Verdict = Literal["pinned", "good", "bad", "unknown"]


@dataclass(frozen=True)
class InstalledRuntime:
    """A TFLite runtime's Python module (``tflite_runtime``) and its distribution's version."""

    module: str
    version: str


@dataclass(frozen=True)
class InstalledLibrary:
    """libedgetpu as found: its Debian package and version (None when installed outside dpkg), the
    library file, the kind of build (``coral``: Google's, ``fork``: rebuilt against a named TensorFlow,
    ``unknown``) and the TensorFlow version it was built against when that is known."""

    package: str | None
    version: str | None
    path: str | None
    kind: str
    built_against_tf: str | None

    def label(self) -> str:
        """``libedgetpu1-std 16.0tf2.19.1-1 (TensorFlow 2.19.1)``, or the file when dpkg has no record."""
        name = (
            f"{self.package} {self.version}" if self.package else f"{self.path} (not from a Debian package)"
        )
        if self.built_against_tf:
            return f"{name} (built against TensorFlow {self.built_against_tf})"
        return f"{name} (TensorFlow build unknown)"


@dataclass(frozen=True)
class PairJudgement:
    """What is known about a runtime + library pair: the verdict, why, and where that is written."""

    verdict: Verdict
    why: str
    sources: list[str] = field(default_factory=list)


@cache
def load_pairs(path: Path = PAIRS_FILE) -> dict[str, Any]:
    """The parsed edgetpu-pairs.json (the pinned pair and the rules)."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def version_tuple(text: str) -> tuple[int, ...]:
    """``2.14.0`` -> (2, 14, 0); shorter versions are padded with zeros to three parts."""
    parts = [int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def classify_library(package: str | None, version: str | None, path: str | None) -> InstalledLibrary:
    """Which kind of libedgetpu build a Debian version names (Coral's, the fork's, or unknown)."""
    if version and CORAL_VERSION.match(version):
        return InstalledLibrary(package, version, path, "coral", CORAL_TF)
    match = FORK_VERSION.search(version or "")
    if match:
        return InstalledLibrary(package, version, path, "fork", match.group(1))
    return InstalledLibrary(package, version, path, "unknown", None)


def _dpkg_records(status_file: Path) -> list[dict[str, str]]:
    try:
        text = status_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    records = []
    for stanza in text.split("\n\n"):
        record = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith((" ", "\t")):
                record[key] = value.strip()
        records.append(record)
    return records


def find_library_file(root: Path = Path("/")) -> Path | None:
    """The first ``libedgetpu.so.1*`` in the usual library folders under ``root``."""
    for folder in LIBRARY_DIRS:
        found = sorted((root / folder).glob("libedgetpu.so.1*"))
        if found:
            return found[0]
    return None


def installed_library(root: Path = Path("/")) -> InstalledLibrary | None:
    """libedgetpu from dpkg's database under ``root`` (std or max), else a library file found on disk."""
    library_file = find_library_file(root)
    path = str(library_file) if library_file else None
    for record in _dpkg_records(root / "var" / "lib" / "dpkg" / "status"):
        installed = record.get("Status", "").endswith(" installed")
        if record.get("Package") in LIBRARY_PACKAGES and installed:
            return classify_library(record["Package"], record.get("Version"), path)
    if library_file is not None:
        return InstalledLibrary(None, None, path, "unknown", None)
    return None


def installed_runtime_versions() -> list[InstalledRuntime]:
    """Every TFLite runtime whose Python distribution is installed, with its version (not imported)."""
    found = []
    for module, distributions in RUNTIME_DISTRIBUTIONS.items():
        for distribution in distributions:
            try:
                found.append(InstalledRuntime(module, importlib.metadata.version(distribution)))
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def pinned_runtime_module() -> str:
    """The Python module of the pinned pair's runtime (``tflite_runtime``)."""
    return str(load_pairs()["pinned"]["runtime"]["module"])


def runtime_for_edgetpu(requested: str, installed: list[str]) -> str:
    """The runtime to use with the Edge TPU: the requested one, or for ``auto`` the pinned pair's
    runtime when it is installed (else ``auto`` as usual: the fastest installed)."""
    if requested == "auto" and pinned_runtime_module() in installed:
        return pinned_runtime_module()
    return requested


def pinned_summary() -> str:
    """``tflite-runtime 2.14.0 + libedgetpu1-std 16.0tf2.19.1-1``."""
    pinned = load_pairs()["pinned"]
    runtime, library = pinned["runtime"], pinned["library"]
    return f"{runtime['pip_name']} {runtime['version']} + {library['package']} {library['version']}"


def _bound(value: str | None, library: InstalledLibrary) -> tuple[int, ...] | None:
    if value is None:
        return None
    if value == "library":
        return version_tuple(library.built_against_tf) if library.built_against_tf else None
    return version_tuple(value)


def _rule_matches(rule: dict[str, Any], runtime: InstalledRuntime, library: InstalledLibrary) -> bool:
    if rule["library"] != library.kind or rule["module"] != runtime.module:
        return False
    low, high = _bound(rule.get("runtime_min"), library), _bound(rule.get("runtime_max"), library)
    if "library" in (rule.get("runtime_min"), rule.get("runtime_max")) and library.built_against_tf is None:
        return False
    version = version_tuple(runtime.version)
    return (low is None or version >= low) and (high is None or version <= high)


def judge_pair(runtime: InstalledRuntime, library: InstalledLibrary) -> PairJudgement:
    """The pinned pair, else the first rule of edgetpu-pairs.json that covers this pair, else unknown."""
    pairs = load_pairs()
    pinned = pairs["pinned"]
    if (
        runtime.module == pinned["runtime"]["module"]
        and runtime.version == pinned["runtime"]["version"]
        and library.version == pinned["library"]["version"]
    ):
        return PairJudgement("pinned", pinned["why_this_pair"], [pinned["library"]["from"]])
    for rule in pairs["rules"]:
        if _rule_matches(rule, runtime, library):
            return PairJudgement(rule["verdict"], rule["why"], list(rule["sources"]))
    return PairJudgement(
        "unknown",
        f"no tested result is known for {runtime.module} {runtime.version} with {library.label()}",
    )
