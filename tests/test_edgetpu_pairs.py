"""The Edge TPU runtime pair: the pinned pair's data, how installed pairs are judged, and doctor's try.

This machine has no Coral and no libedgetpu. The fakes, each standing in for that hardware only:
a made-up /sys tree with a Coral's USB ids, a dpkg status file naming a libedgetpu package, and
tests/fixtures/fake_edgetpu_delegate.c compiled into a plugin that tflite_runtime's and LiteRT's real
load_delegate() load like libedgetpu.so.1 (its delegate claims no node, so the model runs on the CPU;
FAKE_EDGETPU_CRASH=1 makes it segfault the way a mismatched libedgetpu does). The runtimes, the models
and the child process are real.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.bundled import BUNDLED_MODEL
from agent.config import AgentConfig
from agent.detect.edgetpu_pairs import (
    InstalledRuntime,
    classify_library,
    installed_library,
    judge_pair,
    load_pairs,
    runtime_for_edgetpu,
)
from agent.detect.edgetpu_probe import edgetpu_pair_checks, run_probe
from agent.detect.runtime import installed_runtimes
from agent.doctor import Status
from tests.helpers import run_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def fake_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in libedgetpu.so.1, compiled from tests/fixtures/fake_edgetpu_delegate.c."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the stand-in libedgetpu (apt-get install gcc)")
    folder = tmp_path_factory.mktemp("fake-edgetpu")
    library = folder / "libedgetpu.so.1"
    source = FIXTURES / "fake_edgetpu_delegate.c"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library


def fake_machine(root: Path, library_version: str | None, coral: bool = True) -> Path:
    """/sys with a USB Coral (initialised ids) and /var/lib/dpkg/status with libedgetpu1-std."""
    if coral:
        device = root / "sys" / "bus" / "usb" / "devices" / "2-1"
        device.mkdir(parents=True)
        (device / "idVendor").write_text("18d1\n")
        (device / "idProduct").write_text("9302\n")
    status = root / "var" / "lib" / "dpkg" / "status"
    status.parent.mkdir(parents=True)
    records = ["Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u9\n"]
    if library_version is not None:
        records.append(
            f"Package: libedgetpu1-std\nStatus: install ok installed\nArchitecture: arm64\n"
            f"Version: {library_version}\nDescription: Support library for Edge TPU\n more text: here\n"
        )
    status.write_text("\n".join(records))
    return root


def detector(**settings: object) -> AgentConfig:
    return AgentConfig.model_validate({"detector": settings})


# ---------------------------------------------------------------------------- the data file


def test_the_pinned_pair_names_versions_checksums_and_sources_for_both_architectures() -> None:
    pinned = load_pairs()["pinned"]
    runtime, library = pinned["runtime"], pinned["library"]
    assert runtime["module"] == "tflite_runtime" and runtime["version"] == "2.14.0"
    for arch in ("arm64", "amd64"):
        wheel = runtime["wheels"][arch]
        assert SHA256.match(wheel["sha256"]) and f"-{runtime['version']}-cp311-" in wheel["file"]
        deb = library["debs"][arch]
        assert SHA256.match(deb["sha256"])
        assert deb["url"].endswith(f"{library['package']}_{library['version']}.bookworm_{arch}.deb")
    assert "NOT verified" in library["sha256_source"] and "PyPI" in runtime["sha256_source"]
    # The pinned pair must itself satisfy the rules it is judged by.
    built = classify_library(library["package"], library["version"], None)
    assert built.kind == "fork" and built.built_against_tf == library["built_against_tf"]
    rules = [r for r in load_pairs()["rules"] if r["library"] == "fork"]
    assert rules and all(rule["sources"] for rule in load_pairs()["rules"])


# ---------------------------------------------------------------------------- judging a pair


@pytest.mark.parametrize(
    ("module", "runtime_version", "library_version", "verdict"),
    [
        ("tflite_runtime", "2.14.0", "16.0tf2.19.1-1", "pinned"),
        ("tflite_runtime", "2.14.0", "16.0tf2.17.1-1", "good"),
        ("tflite_runtime", "2.17.1", "16.0tf2.17.1-1", "good"),  # Frigate's pair
        ("tflite_runtime", "2.19.0", "16.0tf2.17.1-1", "unknown"),  # newer than the library
        ("ai_edge_litert", "2.3.0", "16.0tf2.19.1-1", "unknown"),
        ("tflite_runtime", "2.14.0", "16.0", "bad"),  # google-coral/edgetpu#812
        ("tflite_runtime", "2.12.0", "15.0", "bad"),
        ("ai_edge_litert", "1.2.0", "16.0", "bad"),
        ("tflite_runtime", "2.5.0.post1", "16.0", "good"),  # Coral's documented pair
        ("tflite_runtime", "2.14.0", "16.0pp3", "unknown"),  # a build that does not name its TensorFlow
    ],
)
def test_pairs_are_judged_by_the_rules_in_the_data_file(
    module: str, runtime_version: str, library_version: str, verdict: str
) -> None:
    judgement = judge_pair(
        InstalledRuntime(module, runtime_version), classify_library("libedgetpu1-std", library_version, None)
    )
    assert judgement.verdict == verdict, judgement
    assert judgement.why


def test_the_library_is_found_in_dpkgs_database(tmp_path: Path) -> None:
    found = installed_library(fake_machine(tmp_path, "16.0tf2.19.1-1"))
    assert found is not None
    assert (found.package, found.version, found.kind, found.built_against_tf) == (
        "libedgetpu1-std",
        "16.0tf2.19.1-1",
        "fork",
        "2.19.1",
    )
    assert installed_library(fake_machine(tmp_path / "none", None)) is None


def test_a_library_file_outside_dpkg_is_named_but_its_build_is_unknown(tmp_path: Path) -> None:
    folder = fake_machine(tmp_path, None) / "usr" / "local" / "lib"
    folder.mkdir(parents=True)
    (folder / "libedgetpu.so.1.0").write_bytes(b"\x7fELF")
    found = installed_library(tmp_path)
    assert found is not None and found.kind == "unknown" and found.path == str(folder / "libedgetpu.so.1.0")
    assert "not from a Debian package" in found.label()


def test_auto_prefers_the_pinned_runtime_with_the_edge_tpu() -> None:
    assert runtime_for_edgetpu("auto", ["ai_edge_litert", "tflite_runtime"]) == "tflite_runtime"
    assert runtime_for_edgetpu("auto", ["ai_edge_litert"]) == "auto"
    assert runtime_for_edgetpu("ai_edge_litert", ["ai_edge_litert", "tflite_runtime"]) == "ai_edge_litert"


# ---------------------------------------------------------------------------- the try, in a child process


@pytest.mark.parametrize("runtime", installed_runtimes())
def test_the_probe_loads_the_delegate_and_runs_one_invoke(fake_library: Path, runtime: str) -> None:
    result = run_probe(BUNDLED_MODEL, "usb", runtime, str(fake_library))
    assert result.ok, result
    assert result.runtime == runtime and result.invoke_ms is not None and result.invoke_ms > 0


def test_a_delegate_that_crashes_is_reported_not_fatal(
    fake_library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EDGETPU_CRASH", "1")
    result = run_probe(BUNDLED_MODEL, "usb", "tflite_runtime", str(fake_library))
    assert not result.ok and result.crashed == "SIGSEGV"


def test_a_missing_library_is_an_error_with_the_reason(tmp_path: Path) -> None:
    result = run_probe(BUNDLED_MODEL, "usb", "tflite_runtime", str(tmp_path / "libedgetpu.so.1"))
    assert not result.ok and not result.crashed
    assert "libedgetpu.so.1" in result.error


# ---------------------------------------------------------------------------- doctor's rows


@pytest.mark.skipif("tflite_runtime" not in installed_runtimes(), reason="needs tflite-runtime (test extra)")
def test_doctor_names_the_pinned_pair_and_runs_one_invoke_on_a_present_coral(
    tmp_path: Path, fake_library: Path
) -> None:
    root = fake_machine(tmp_path, load_pairs()["pinned"]["library"]["version"])
    rows = {c.name: c for c in edgetpu_pair_checks(detector().detector, root=root, library=str(fake_library))}
    pair, invoke = rows["edgetpu pair"], rows["edgetpu invoke"]
    assert pair.status == Status.OK and "the pinned pair" in pair.detail
    assert pair.data["runtime"] == "tflite_runtime" and pair.data["verdict"] == "pinned"
    assert invoke.status == Status.OK and invoke.data["device"] == "usb"
    # The bundled model is a CPU model: the delegate attaches and the TPU computes nothing.
    assert "a CPU model" in invoke.detail


@pytest.mark.skipif("tflite_runtime" not in installed_runtimes(), reason="needs tflite-runtime (test extra)")
def test_doctor_flags_coral_s_own_library_as_known_bad_and_reports_the_crash(
    tmp_path: Path, fake_library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_machine(tmp_path, "16.0")
    monkeypatch.setenv("FAKE_EDGETPU_CRASH", "1")
    relaxed = {
        c.name: c for c in edgetpu_pair_checks(detector().detector, root=root, library=str(fake_library))
    }
    assert relaxed["edgetpu pair"].status == Status.WARN and "known bad" in relaxed["edgetpu pair"].detail
    assert "google-coral/edgetpu#812" in relaxed["edgetpu pair"].detail
    assert relaxed["edgetpu invoke"].status == Status.WARN and "SIGSEGV" in relaxed["edgetpu invoke"].detail
    required = edgetpu_pair_checks(detector(edgetpu="usb").detector, root=root, library=str(fake_library))
    assert [c.status for c in required] == [Status.FAIL, Status.FAIL]
    assert "install-pi.sh --edgetpu" in required[0].fix


def test_a_runtime_without_a_known_result_only_warns(tmp_path: Path, fake_library: Path) -> None:
    if "ai_edge_litert" not in installed_runtimes():
        pytest.skip("needs ai-edge-litert")
    root = fake_machine(tmp_path, "16.0tf2.19.1-1", coral=False)
    rows = edgetpu_pair_checks(
        detector(runtime="ai_edge_litert").detector, root=root, library=str(fake_library)
    )
    assert rows[0].status == Status.WARN and "no tested result" in rows[0].detail
    assert rows[1].status == Status.SKIP and "no Coral" in rows[1].detail


def test_doctor_json_has_the_pair_row_on_this_machine(tmp_path: Path) -> None:
    """This machine has neither a Coral nor libedgetpu: the row says so and does not fail."""
    config = tmp_path / "agent.yaml"
    images = tmp_path / "images"
    images.mkdir()
    config.write_text(f"source:\n  url: {images}\noutput:\n  dir: {tmp_path / 'out'}\n")
    result = run_cli("doctor", "--config", str(config), "--json", "--invokes", "1", "--timeout", "5")
    rows = {check["name"]: check for check in json.loads(result.out)["checks"]}
    pair = rows["edgetpu pair"]
    assert pair["status"] == "SKIP" and "libedgetpu is not installed" in pair["detail"]
