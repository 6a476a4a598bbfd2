"""The model catalog through the CLI, as a user runs it: ``models list | fetch | verify``, fetching
from a real HTTP server on loopback that serves the upstream files from ../shared, and configs
that name a model by its catalog name."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.detect.catalog import load_catalog
from agent.detect.runtime import installed_runtimes
from tests.helpers import CliResult, run_cli
from tests.model_mirror import ModelMirror, Route

# catalog name -> installed file name -> the upstream file in ../shared/models
SHARED_FILES = {
    "print3d": {
        "model.tflite": "print3d/print3d_2020-10-23_ssd_uint8.tflite",
        "dict.txt": "print3d/dict.txt",
        "tflite_metadata.json": "print3d/tflite_metadata.json",
    },
    "ssd-mobilenet-v1-coco": {
        "model.tflite": "ssd_mobilenet_v1_coco_quant_detect.tflite",
        "labelmap.txt": "ssd_mobilenet_v1_coco_labelmap.txt",
    },
}
FETCH_PRINT3D = "edge-agent models fetch print3d --accept-license"
RUNTIME = installed_runtimes()[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (temp files included) with its sha256."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A models folder of the test's own, and a home that is not the real one."""
    return {
        "EDGE_AGENT_MODELS_DIR": str(tmp_path / "models"),
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "EDGE_AGENT_MODELS_MIRROR": "",
    }


@pytest.fixture
def mirror(shared_dir: Path) -> Iterator[ModelMirror]:
    server = ModelMirror()
    for name, files in SHARED_FILES.items():
        for file_name, upstream in files.items():
            server.routes[f"/{name}/{file_name}"] = Route((shared_dir / "models" / upstream).read_bytes())
    yield server
    server.close()


def fetch(env: dict[str, str], *args: str) -> CliResult:
    return run_cli("models", "fetch", *args, env=env, timeout=120)


def one_error_line(result: CliResult) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("edge-agent: error: "), lines[0]
    return lines[0]


# -- the catalog's data ----------------------------------------------------------------------------


def test_catalog_pins_the_upstream_files_that_shared_holds(shared_dir: Path) -> None:
    catalog = load_catalog()
    for name, files in SHARED_FILES.items():
        assert set(catalog.entries[name].files) == set(files), name
        for file_name, upstream in files.items():
            spec = catalog.entries[name].files[file_name]
            path = shared_dir / "models" / upstream
            assert (spec.size, spec.sha256) == (path.stat().st_size, sha256(path)), (name, file_name)


def test_demo_entry_pins_the_files_the_package_ships() -> None:
    demo = load_catalog().entries["print3d-demo"]
    assert demo.demo and demo.permissive
    for file_name, spec in demo.files.items():
        path = spec.packaged
        assert path is not None and path.is_file(), file_name
        actual = (path.stat().st_size, sha256(path))
        assert (spec.size, spec.sha256) == actual, (
            f"{path.name} changed (a retrained model or an edited card): set print3d-demo's {file_name} "
            f"in agent/data/model-catalog.yaml to size: {actual[0]}, sha256: {actual[1]}"
        )


def test_every_download_is_pinned_to_a_commit_or_a_storage_generation() -> None:
    for entry in load_catalog().entries.values():
        for file_name, spec in entry.files.items():
            if spec.packaged is None:
                assert re.search(r"/[0-9a-f]{40}/|[?&]generation=\d+$", spec.url), (entry.name, file_name)
                assert spec.url.startswith("https://"), spec.url


# -- fetch, then use by name -----------------------------------------------------------------------
