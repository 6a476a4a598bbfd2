"""``edge-agent label``: a VoTT 2.2.0 project the validator passes, matching ``detect``."""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.parse
from pathlib import Path

import cv2
import pytest

from agent.boxes import iou_matrix
from tests.helpers import run_cli, validate_vott

FIXTURE_MODELS = Path(__file__).parent / "fixtures" / "models"


def vott_id(reviewer_path: str) -> str:
    """VoTT 2.2.0: md5 of 'file:' + encodeURI(path with / separators), # and ? escaped."""
    uri = "file:" + urllib.parse.quote(reviewer_path.replace("\\", "/"), safe=";,/:@&=+$!*'()")
    return hashlib.md5(uri.encode()).hexdigest()


def test_label_print3d_frames_gives_a_valid_project_matching_detect(shared_dir: Path, tmp_path: Path) -> None:
    model = shared_dir / "models" / "print3d" / "print3d_2020-10-23_ssd_uint8.tflite"
    frames = tmp_path / "frames"
    shutil.copytree(shared_dir / "models" / "print3d" / "images", frames)
    target = tmp_path / "project"
    result = run_cli("label", "--model", str(model), "--threshold", "0.3", "--out", str(target), str(frames))
    assert result.code == 0, result.err
    assert "with detections" in result.err
    check = validate_vott(shared_dir, target, frames)
    assert check.returncode == 0, check.stdout

    detect = run_cli("detect", "--json", "--model", str(model), "--threshold", "0.3", str(frames))
    by_image = {Path(line["image"]).name: line for line in detect.json_lines()}
    assets = sorted(target.glob("*-asset.json"))
    assert len(assets) == len(by_image) == 4
    for asset_file in assets:
        meta = json.loads(asset_file.read_text())
        name = meta["asset"]["name"]
        assert (
            meta["asset"]["id"] == vott_id(str(frames / name)) == asset_file.name.removesuffix("-asset.json")
        )
        expected = by_image[name]["detections"]
        regions = meta["regions"]
        assert [r["tags"][0] for r in regions] == [d["label"] for d in expected]
        for region, det in zip(regions, expected, strict=True):
            box = region["boundingBox"]
            xyxy = [box["left"], box["top"], box["left"] + box["width"], box["top"] + box["height"]]
            assert float(iou_matrix([xyxy], [det["box_xyxy"]])[0, 0]) > 0.999
    scores = list((target / "edge-agent-scores").glob("*.json"))
    assert len(scores) == 4


def test_label_maps_paths_to_a_windows_reviewer(shared_dir: Path, tmp_path: Path) -> None:
    frames = tmp_path / "review" / "frames"
    frames.mkdir(parents=True)
    image = cv2.imread(str(FIXTURE_MODELS / "yolov5_layout_uint8.png"))
    cv2.imwrite(str(frames / "cam 1#frame.png"), image)
    target = tmp_path / "review" / "vott"
    result = run_cli(
        "label",
        "--model",
        str(FIXTURE_MODELS / "yolov5_layout_uint8.tflite"),
        "--out",
        str(target),
        "--reviewer-root",
        "C:\\Users\\ann\\review",
        str(frames),
    )
    assert result.code == 0, result.err
    project = json.loads(next(target.glob("*.vott")).read_text())
    assert project["sourceConnection"]["providerOptions"]["folderPath"] == "C:\\Users\\ann\\review\\frames"
    assert project["activeLearningSettings"]["autoDetect"] is False
    (asset,) = project["assets"].values()
    assert asset["path"] == "file:C:/Users/ann/review/frames/cam%201%23frame.png"
    assert asset["id"] == vott_id("C:\\Users\\ann\\review\\frames\\cam 1#frame.png")
    check = validate_vott(shared_dir, target, frames)
    assert check.returncode == 0, check.stdout


def _video(path: Path, frames: int) -> Path:
    """An MJPG .avi of ``frames`` frames of the YOLOv5 fixture image."""
    image = cv2.imread(str(FIXTURE_MODELS / "yolov5_layout_uint8.png"))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 96))
    for _ in range(frames):
        writer.write(image)
    writer.release()
    return path


def test_label_a_video_writes_its_frames_into_the_frames_folder(tmp_path: Path) -> None:
    video = _video(tmp_path / "clip.avi", 6)
    target = tmp_path / "out"
    result = run_cli(
        "label",
        "--model",
        str(FIXTURE_MODELS / "yolov5_layout_uint8.tflite"),
        "--out",
        str(target),
        str(video),
    )
    assert result.code == 0, result.err
    assert len(list((target / "frames").glob("*.jpg"))) == 6
    assert len(list(target.glob("*-asset.json"))) == 6


def test_label_shows_progress_against_the_frames_left_and_resumes_a_video(tmp_path: Path) -> None:
    video = _video(tmp_path / "clip.avi", 8)
    model = str(FIXTURE_MODELS / "yolov5_layout_uint8.tflite")
    target = tmp_path / "out"
    first = run_cli("label", "--model", model, "--out", str(target), "--progress", "on", str(video))
    assert first.code == 0, first.err
    assert "8/8 [" in first.err, "a bar with the video's frame count as its total"
    assert len(list(target.glob("*-asset.json"))) == 8
    again = run_cli("label", "--model", model, "--out", str(target), "--progress", "on", str(video))
    assert again.code == 0 and "labelled 0 frames" in again.err, again.err
    redo = run_cli("label", "--model", model, "--out", str(target), "--redo", str(video))
    assert redo.code == 0 and "labelled 8 frames" in redo.err, redo.err
    assert len(list(target.glob("*-asset.json"))) == 8


def test_run_on_a_video_resumes_after_the_last_frame_it_finished(tmp_path: Path) -> None:
    video = _video(tmp_path / "clip.avi", 10)
    common = ["run", "--source", str(video), "--model", str(FIXTURE_MODELS / "yolov5_layout_uint8.tflite")]
    common += ["--output-dir", str(tmp_path / "data"), "--no-mqtt", "--no-alerts"]
    assert run_cli(*common, "--max-frames", "4").code == 0
    rest = run_cli(*common)
    assert rest.code == 0, rest.err
    assert "processed 6 frames" in rest.err, rest.err
    assets = json.loads(next((tmp_path / "data" / "vott").glob("*.vott")).read_text())["assets"]
    assert len(assets) == 10, "each of the video's frames once"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["/nonexistent/folder"], 2, "is not an existing folder or file"),
        (["/dev/video97"], 1, "/dev/video97"),
        (["http://"], 2, "no host name"),
    ],
)
def test_label_bad_sources_are_clear_errors(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    result = run_cli(
        "label",
        "--model",
        str(FIXTURE_MODELS / "yolov5_layout_uint8.tflite"),
        "--out",
        str(tmp_path / "p"),
        *args,
    )
    assert result.code == code, result.err
    assert message in result.err
    assert "Traceback" not in result.err


def test_label_into_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), cv2.imread(str(FIXTURE_MODELS / "yolov5_layout_uint8.png")))
    result = run_cli(
        "label",
        "--model",
        str(FIXTURE_MODELS / "yolov5_layout_uint8.tflite"),
        "--out",
        str(blocker / "project"),
        str(frames),
    )
    assert result.code == 1
    assert "cannot create the VoTT target folder" in result.err
    assert "Traceback" not in result.err
