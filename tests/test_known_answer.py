"""The known-answer check: the bundled model's shipped answers, answers recorded for other models,
and a broken inference path (a real .tflite whose weights are zeros) stopping ``run`` and showing in
``doctor`` and the retained stats.

The broken path: the bundled model with its weight buffers zeroed loads and runs, but computes
nonsense, as inference does on a CPU whose kernels misbehave (qemu's SME CPU model with LiteRT's
XNNPACK) or with a mismatched Edge TPU library. Its answers file claims the real model's answers
for the zeroed file, which is what the runtime should have produced.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent.bundled import BUNDLED_DATA
from agent.config.detector import DetectorSettings
from agent.detect.answer_compare import compare_answers
from agent.detect.detector import Detector
from agent.detect.known_answer import known_answer
from agent.detect.known_answers_file import (
    Answer,
    KnownAnswers,
    Platform,
    Tolerance,
    load_answers,
    save_answers,
    select_entry,
)
from agent.detect.platform_facts import EDGETPU_PACKAGES, cpu_description, installed_deb_version
from agent.detect.runtime import installed_runtimes, runtime_version
from agent.fsutil import file_sha256
from tests.helpers import REPO, run_cli, zero_weight_buffers
from tests.mosquitto import MessageCollector, free_port, mosquitto  # noqa: F401 (fixture)

BUNDLED_MODEL = BUNDLED_DATA / "print3d_guidance.tflite"
RUNTIMES = [r for r in installed_runtimes() if r in ("ai_edge_litert", "tflite_runtime")]
SHIPPED = load_answers(BUNDLED_MODEL.with_name("print3d_guidance.answers.json"))


def shipped_detections(runtime: str) -> list[Answer]:
    """The bundled model's shipped answers for ``runtime`` (on every machine)."""
    return next(e.detections for e in SHIPPED.answers if e.runtime == runtime and e.machine == "*")


# What the default runtime's answers are, as a mismatch names them (its best detection first)
FASTEST_ANSWERS = shipped_detections(installed_runtimes()[0])
EXPECTED_LINE = f"expected {max(FASTEST_ANSWERS, key=lambda a: a.score).text()}"


def answer(label: str, score: float, box: list[float], class_id: int = 0) -> Answer:
    return Answer(class_id=class_id, label=label, score=score, box_xyxy=box)


def copy_bundled(folder: Path, name: str) -> Path:
    """The bundled model and its card as ``folder/name.tflite`` + ``name.yaml`` (no answers)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / f"{name}.tflite"
    shutil.copy(BUNDLED_MODEL, model)
    shutil.copy(BUNDLED_MODEL.with_suffix(".yaml"), folder / f"{name}.yaml")
    return model


def broken_model(folder: Path) -> Path:
    """The bundled model with zeroed weights, its card, and the real model's answers claimed for it."""
    model = copy_bundled(folder, "guidance")
    assert zero_weight_buffers(BUNDLED_MODEL, model) > 500_000
    shipped = load_answers(BUNDLED_MODEL.with_name("print3d_guidance.answers.json"))
    shipped.model.sha256 = file_sha256(model)
    shipped.frame.path = str(BUNDLED_DATA / shipped.frame.path)
    save_answers(folder / "guidance.answers.json", shipped)
    return model


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("edge-agent: error:")]


# ---------------------------------------------------------------------------- comparison rules


def test_identical_answers_match() -> None:
    expected = [answer("nozzle", 0.9, [10, 10, 50, 50]), answer("raft", 0.4, [0, 60, 100, 90], 1)]
    comparison = compare_answers(expected, list(expected), Tolerance(), 0.05)
    assert comparison.ok
    assert comparison.agreement().startswith("2 of 2 known detections match")


def test_nothing_where_answers_were_expected_says_got_nothing() -> None:
    expected = [answer("nozzle", 0.9, [10, 10, 50, 50])]
    comparison = compare_answers(expected, [], Tolerance(), 0.05)
    assert not comparison.ok
    assert comparison.differences() == "expected nozzle 0.90 at [10,10,50,50], got nothing"


def test_a_score_beyond_the_tolerance_names_what_came_instead() -> None:
    expected = [answer("nozzle", 0.9, [10, 10, 50, 50])]
    comparison = compare_answers(expected, [answer("nozzle", 0.6, [10, 10, 50, 50])], Tolerance(), 0.05)
    assert (
        comparison.differences() == "expected nozzle 0.90 at [10,10,50,50], got nozzle 0.60 at [10,10,50,50]"
    )


def test_a_moved_box_and_an_unexpected_detection_are_differences() -> None:
    expected = [answer("nozzle", 0.9, [10, 10, 50, 50])]
    got = [answer("nozzle", 0.9, [30, 30, 70, 70]), answer("print", 0.5, [0, 0, 9, 9], 2)]
    comparison = compare_answers(expected, got, Tolerance(), 0.05)
    assert comparison.missing == expected and [a.label for a in comparison.extra] == ["nozzle", "print"]


def test_detections_near_the_decode_threshold_may_come_and_go() -> None:
    """Within one tolerance of the threshold an answer may fall on either side of it legitimately."""
    expected = [answer("nozzle", 0.9, [10, 10, 50, 50]), answer("raft", 0.08, [0, 60, 100, 90], 1)]
    got = [answer("nozzle", 0.88, [11, 10, 50, 51]), answer("print", 0.07, [0, 0, 9, 9], 2)]
    assert compare_answers(expected, got, Tolerance(), 0.05).ok


def platform_for(runtime: str, version: str, machine: str = "x86_64") -> Platform:
    return Platform(runtime, version, "none", None, machine, "cpu")


def test_the_most_specific_entry_wins_and_other_versions_are_upgrades() -> None:
    shipped = load_answers(BUNDLED_MODEL.with_name("print3d_guidance.answers.json"))
    litert = select_entry(shipped, platform_for("ai_edge_litert", "9.9", "riscv64"))
    assert litert is not None and litert[0].runtime == "ai_edge_litert" and litert[1] == "exact"
    assert select_entry(shipped, platform_for("tensorflow", "2.16.1")) is None

    classic = next(e for e in shipped.answers if e.runtime == "tflite_runtime")
    on_arm = classic.model_copy(update={"machine": "aarch64", "why": "its aarch64 kernels differ"})
    both = shipped.model_copy(update={"answers": [classic, on_arm]})
    chosen = select_entry(both, platform_for("tflite_runtime", "2.14.0", "aarch64"))
    assert chosen is not None and chosen[0].why == "its aarch64 kernels differ"
    chosen = select_entry(both, platform_for("tflite_runtime", "2.14.0", "x86_64"))
    assert chosen is not None and chosen[0].machine == "*"

    pinned = shipped.model_copy(deep=True)
    for entry in pinned.answers:
        entry.runtime_version = "2.2.0"
    chosen = select_entry(pinned, platform_for("ai_edge_litert", "2.3.0"))
    assert chosen is not None and chosen[1] == "upgrade"


# ---------------------------------------------------------------------------- the bundled model


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_bundled_model_gives_its_shipped_answers(runtime: str, tmp_path: Path) -> None:
    detector = Detector(DetectorSettings(runtime=runtime, num_threads=1))
    result = known_answer(detector, data_dir=tmp_path, record=False)
    assert result.status == "ok", result.detail
    assert result.source == "shipped" and result.comparison is not None
    assert len(result.comparison.pairs) == len(result.comparison.expected) == len(shipped_detections(runtime))
    assert f"{runtime} {runtime_version(runtime)}, no delegate, {platform.machine()}" in result.detail
    assert not any(tmp_path.iterdir()), "a check against shipped answers writes nothing"


def test_the_bundled_answers_file_belongs_to_the_bundled_model() -> None:
    shipped = load_answers(BUNDLED_MODEL.with_name("print3d_guidance.answers.json"))
    assert shipped.model.sha256 == file_sha256(BUNDLED_MODEL), (
        "the bundled model changed: make its answers again with scripts/known_answers.py "
        "(docs/known-answers.md)"
    )
    frame = BUNDLED_DATA / shipped.frame.path
    assert frame.parent.name == "sample_timelapse" and file_sha256(frame) == shipped.frame.sha256


# ---------------------------------------------------------------------------- a broken inference path


def test_run_refuses_to_start_when_inference_is_silently_wrong(tmp_path: Path) -> None:
    model = broken_model(tmp_path / "model")
    out = tmp_path / "out"
    result = run_cli("run", "--model", str(model), "--output-dir", str(out), "--no-mqtt")
    assert result.code == 1, result.err
    (line,) = error_lines(result.err)
    runtime = installed_runtimes()[0]
    assert f"known-answer check failed: print3d-guidance on {runtime} {runtime_version(runtime)}" in line
    assert f"no delegate, {platform.machine()} (" in line
    assert EXPECTED_LINE in line and "--allow-drift" in line
    assert "Traceback" not in result.err
    assert not (out / "vott").exists(), "nothing ran"


def test_run_check_refuses_the_same_model_and_records_nothing(tmp_path: Path) -> None:
    model = broken_model(tmp_path / "model")
    out = tmp_path / "out"
    args = ("run", "--check", "--model", str(model), "--output-dir", str(out), "--no-mqtt")
    refused = run_cli(*args)
    assert refused.code == 1, refused.err
    (line,) = error_lines(refused.err)
    assert EXPECTED_LINE in line and "--allow-drift" in line
    allowed = run_cli(*args, "--allow-drift")
    assert allowed.code == 0, allowed.err
    assert "known answer: known-answer check failed" in allowed.out
    assert not list(tmp_path.rglob("*.answers.recorded.json")), "--check never records answers"


def test_doctor_shows_the_comparison(tmp_path: Path) -> None:
    model = broken_model(tmp_path / "model")
    result = run_cli("doctor", "--json", "--model", str(model), "--invokes", "1", "--timeout", "5")
    report = json.loads(result.out)
    row = next(c for c in report["checks"] if c["name"] == "known answer")
    assert row["status"] == "FAIL" and result.code == 1
    assert EXPECTED_LINE in row["detail"] and "runtime" in row["fix"]
    comparison = row["data"]["comparison"]
    assert comparison["expected"] == len(FASTEST_ANSWERS) and comparison["matched"] == 0
    required = SHIPPED.decode.score_threshold + SHIPPED.tolerance.score  # closer ones may come and go
    assert {a["label"] for a in comparison["missing"]} == {
        a.label for a in FASTEST_ANSWERS if a.score >= required
    }
    assert row["data"]["source"] == "shipped"

    good = run_cli("doctor", "--json", "--invokes", "1", "--timeout", "5")
    row = next(c for c in json.loads(good.out)["checks"] if c["name"] == "known answer")
    n = len(FASTEST_ANSWERS)
    assert row["status"] == "OK" and f"{n} of {n} known detections match" in row["detail"]


def test_allow_drift_runs_and_the_retained_stats_say_so(mosquitto, tmp_path: Path) -> None:  # noqa: F811
    broker = mosquitto()
    model = broken_model(tmp_path / "model")
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                # frames 0.2 s apart and stats every 0.1 s: stats are published while it runs
                "source": {"url": str(BUNDLED_DATA / "sample_timelapse"), "id": "cam", "interval_s": 0.2},
                "detector": {"model": str(model)},
                "output": {"dir": str(tmp_path / "out")},
                "pipeline": {"stats_interval_s": 0.1},
                "mqtt": {"enabled": True, "host": broker.host, "port": broker.port, "device_id": "drifty"},
            }
        )
    )
    result = run_cli("run", "--config", str(config), "--max-frames", "6", "--allow-drift")
    assert result.code == 0, result.err
    assert "WARNING" in result.err and EXPECTED_LINE in result.err
    with MessageCollector(broker.host, broker.port, ["edge-agent/drifty/stats"]) as collector:
        assert collector.wait_for(lambda ms: len(ms) > 0), "no retained stats"
        stats = json.loads(collector.messages[-1].payload)
    known = stats["detector"]["known_answer"]
    assert known["status"] == "drift" and known["source"] == "shipped"
    assert known["comparison"]["matched"] == 0 and known["machine"] == platform.machine()


# ---------------------------------------------------------------------------- recorded answers


def recorded_entries(path: Path) -> list[dict[str, str]]:
    return [
        {k: e[k] for k in ("runtime", "runtime_version", "machine")}
        for e in json.loads(path.read_text())["answers"]
    ]


def test_another_model_records_its_answers_then_compares_after_an_upgrade(tmp_path: Path) -> None:
    model = copy_bundled(tmp_path / "mine", "mine")
    recorded = tmp_path / "mine" / "mine.answers.recorded.json"
    runtime = installed_runtimes()[0]
    version = runtime_version(runtime)
    args = (
        "run",
        "--model",
        str(model),
        "--output-dir",
        str(tmp_path / "out"),
        "--no-mqtt",
        "--max-frames",
        "2",
    )

    first = run_cli(*args)
    assert first.code == 0, first.err
    n = len(shipped_detections(runtime))  # the same model bytes as the bundled one
    assert f"first run here, recorded {n} detection(s)" in first.err
    assert recorded_entries(recorded) == [
        {"runtime": runtime, "runtime_version": version, "machine": platform.machine()}
    ]
    again = run_cli(*args)
    assert again.code == 0 and f"{n} of {n} known detections match" in again.err
    assert f"with the recorded answers (made with {runtime} {version}" in again.err

    # As if the answers were recorded by an older runtime: compared (they match), then kept for this one.
    data = json.loads(recorded.read_text())
    data["answers"][0]["runtime_version"] = data["answers"][0]["recorded"]["runtime_version"] = "0.9.0"
    recorded.write_text(json.dumps(data))
    upgraded = run_cli(*args)
    assert upgraded.code == 0, upgraded.err
    assert f"recorded answers (made with {runtime} 0.9.0" in upgraded.err
    assert [e["runtime_version"] for e in recorded_entries(recorded)] == ["0.9.0", version]

    # After the upgrade, the same model file computing nonsense (zeroed weights, the answers claimed
    # for it): the start stops with the comparison against the older runtime's answers.
    zero_weight_buffers(BUNDLED_MODEL, model)
    data["model"]["sha256"] = file_sha256(model)
    recorded.write_text(json.dumps(data))
    broken = run_cli(*args)
    assert broken.code == 1
    (line,) = error_lines(broken.err)
    assert f"compared with the recorded answers (made with {runtime} 0.9.0" in line and EXPECTED_LINE in line


def test_a_model_without_a_card_records_in_the_data_folder_not_among_its_files(tmp_path: Path) -> None:
    folder = tmp_path / "third-party"
    folder.mkdir()
    shutil.copy(BUNDLED_MODEL, folder / "model.tflite")
    (folder / "labels.txt").write_text("nozzle\nraft\nprint\nadhesion\nspaghetti\n")
    detector = Detector(
        DetectorSettings(model=str(folder / "model.tflite"), labels=str(folder / "labels.txt"))
    )
    result = known_answer(detector, data_dir=tmp_path / "data")
    assert result.status == "recorded", result.detail
    assert sorted(p.name for p in folder.iterdir()) == ["labels.txt", "model.tflite"]
    assert (
        result.answers_file is not None and result.answers_file.parent == tmp_path / "data" / "known-answers"
    )
    assert known_answer(detector, data_dir=tmp_path / "data").status == "ok"


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder the agent cannot write: a read-only bind mount as root (root ignores modes), else mode 555."""
    folder = tmp_path / "ro"
    folder.mkdir()
    copy_bundled(folder, "mine")
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_read_only_model_folder_records_in_the_data_folder(read_only_folder: Path, tmp_path: Path) -> None:
    detector = Detector(DetectorSettings(model=str(read_only_folder / "mine.tflite")))
    result = known_answer(detector, data_dir=tmp_path / "data")
    assert result.status == "recorded", result.detail
    assert (
        result.answers_file is not None and result.answers_file.parent == tmp_path / "data" / "known-answers"
    )
    assert any("cannot write" in note for note in result.notes)
    again = known_answer(detector, data_dir=tmp_path / "data")
    assert again.status == "ok" and again.answers_file == result.answers_file


def test_doctor_records_nothing_and_says_the_first_run_will(tmp_path: Path) -> None:
    model = copy_bundled(tmp_path / "mine", "mine")
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump({"output": {"dir": str(tmp_path / "out")}, "mqtt": {"port": free_port()}})
    )
    result = run_cli("doctor", "--json", "--config", str(config), "--model", str(model), "--invokes", "1")
    row = next(c for c in json.loads(result.out)["checks"] if c["name"] == "known answer")
    assert row["status"] == "WARN" and "records them at its first start" in row["detail"]
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["mine.tflite", "mine.yaml"]


def test_a_damaged_answers_file_stops_the_start_with_its_name(tmp_path: Path) -> None:
    model = copy_bundled(tmp_path / "mine", "mine")
    (tmp_path / "mine" / "mine.answers.json").write_text('{"format": "edge-agent-known-answers/1", "model": ')
    result = run_cli("run", "--model", str(model), "--output-dir", str(tmp_path / "out"), "--no-mqtt")
    assert result.code == 1
    (line,) = error_lines(result.err)
    assert "mine.answers.json is not valid JSON" in line and "Traceback" not in result.err


def test_the_answers_format_round_trips(tmp_path: Path) -> None:
    shipped = load_answers(BUNDLED_MODEL.with_name("print3d_guidance.answers.json"))
    save_answers(tmp_path / "copy.answers.json", shipped)
    assert load_answers(tmp_path / "copy.answers.json") == shipped
    assert KnownAnswers.model_json_schema()["properties"]["format"]["const"] == "edge-agent-known-answers/1"


def test_a_missing_known_frame_is_a_warning_not_a_refusal(tmp_path: Path) -> None:
    """A broken install (the frame the answers name is gone) cannot be checked; the agent still runs."""
    model = copy_bundled(tmp_path / "mine", "mine")
    shipped = load_answers(BUNDLED_MODEL.with_name("print3d_guidance.answers.json"))
    shipped.model.sha256 = file_sha256(model)
    shipped.frame.path = "frames/gone.jpg"
    save_answers(tmp_path / "mine" / "mine.answers.json", shipped)
    result = run_cli(
        "run", "--model", str(model), "--output-dir", str(tmp_path / "out"), "--no-mqtt", "--max-frames", "1"
    )
    assert result.code == 0, result.err
    warning = next(line for line in result.err.splitlines() if "known answer:" in line)
    assert "WARNING" in warning and "not checked: the known frame" in warning and "gone.jpg" in warning


# ---------------------------------------------------------------------------- platform facts


def test_the_cpu_is_named_from_cpuinfo(tmp_path: Path) -> None:
    pi4 = REPO / "scripts" / "arm64" / "cpuinfo-pi4.txt"  # what scripts/arm64/check.py shows aarch64 programs
    assert cpu_description(pi4).startswith("Cortex-A72, Raspberry Pi 4 Model B Rev 1.4")
    x86 = tmp_path / "cpuinfo"
    x86.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse\n")
    assert cpu_description(x86) == "Intel(R) Xeon(R) Processor"
    assert cpu_description(tmp_path / "absent") == "unknown CPU"


def test_the_edgetpu_library_version_comes_from_dpkg(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text(
        "Package: libedgetpu1-max\nStatus: deinstall ok config-files\nVersion: 16.0\n\n"
        "Package: libedgetpu1-std\nStatus: install ok installed\nVersion: 16.0tf2.17.1-1.bookworm\n"
    )
    assert installed_deb_version(EDGETPU_PACKAGES, status) == "libedgetpu1-std 16.0tf2.17.1-1.bookworm"
    assert installed_deb_version(EDGETPU_PACKAGES, tmp_path / "absent") is None
