"""edge-agent export: VoTT project -> COCO / Pascal VOC / YOLO / AutoML CSV / VoTT CSV, and
COCO / VOC / YOLO -> VoTT project, driven through the CLI with real files."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from agent import cli
from agent.detections import Detections
from agent.vott import VottProject, load_project
from export.dataset import LabeledDataset, LabeledImage, assign_splits

CLASSES = ("person", "car", "dog")
# file name -> (width, height, boxes xyxy, class ids)
FRAMES: dict[str, tuple[int, int, list[list[float]], list[int]]] = {
    "frame_001.jpg": (320, 240, [[10.5, 20.25, 100, 200], [150, 30, 310.75, 120]], [0, 1]),
    "cam 1#frame_002.jpg": (320, 240, [[0, 0, 50, 60]], [2]),
    "frame_003.png": (200, 100, [[20, 10, 180, 90], [30.33, 40.66, 60.5, 99]], [1, 1]),
    "Ölberg.jpg": (320, 240, [[100, 100, 140, 180]], [0]),
}
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch) -> Run:
    """``edge-agent ARGS`` through ``agent.cli.main`` with only this package's commands registered
    (so other commands' modules do not matter here); returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(cli, "COMMANDS", ["export.cli:add_export_command", "export.cli:add_eval_command"])

    def run(*argv: str | Path) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([str(a) for a in argv])
        return code, out.getvalue(), err.getvalue()

    return run


def make_project(
    root: Path, frames: dict[str, tuple[int, int, list[list[float]], list[int]]] = FRAMES
) -> Path:
    """A VoTT project with real images under ``root``; returns its target folder."""
    frames_dir, target = root / "frames", root / "vott"
    frames_dir.mkdir(parents=True)
    rng = np.random.default_rng(3)
    with VottProject(target, frames_dir, name="edge review", tags=CLASSES) as project:
        for name, (width, height, boxes, classes) in frames.items():
            image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            assert cv2.imwrite(str(frames_dir / name), image) or _write_unicode(frames_dir / name, image)
            project.add_frame(
                frames_dir / name,
                width,
                height,
                Detections.create(boxes, [0.9] * len(boxes), classes, CLASSES),
            )
    return target


def _write_unicode(path: Path, image: np.ndarray) -> bool:
    ok, data = cv2.imencode(path.suffix, image)
    path.write_bytes(data.tobytes())
    return bool(ok)


def boxes_by_name(target: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    project = load_project(target)
    return {a.file_name: (a.labels, a.xyxy) for a in project.tagged()}


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_round_trip_through_each_format_is_lossless(tmp_path: Path, run_cli: Run, fmt: str) -> None:
    target = make_project(tmp_path / "src")
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        "export", "--project", target, "--format", fmt, "--out", out, "--seed", "1"
    )
    assert code == 0, stderr
    assert "exported 4 images" in stdout
    back = tmp_path / "back" / "vott"
    code, stdout, stderr = run_cli("export", "--from", fmt, "--in", out, "--project", back)
    assert code == 0, stderr
    assert "imported 4 images" in stdout
    frames = tmp_path / "back" / "vott-frames"
    before, after = boxes_by_name(target), boxes_by_name(back)
    assert set(after) == set(before)
    for name, (labels, xyxy) in before.items():
        assert after[name][0] == labels, name
        np.testing.assert_allclose(after[name][1], xyxy, atol=0.01, err_msg=name)
        assert (frames / name).read_bytes() == (tmp_path / "src" / "frames" / name).read_bytes()
    assert load_project(back).tags == list(CLASSES)
    # importing the same dataset again changes nothing
    code, _, stderr = run_cli("export", "--from", fmt, "--in", out, "--project", back)
    assert code == 0, stderr
    assert boxes_by_name(back).keys() == before.keys()


def test_imported_project_passes_the_validator(shared_dir: Path, tmp_path: Path, run_cli: Run) -> None:
    target = make_project(tmp_path / "src")
    assert run_cli("export", "--project", target, "--format", "voc", "--out", tmp_path / "voc")[0] == 0
    back, frames = tmp_path / "review" / "vott", tmp_path / "review" / "frames"
    code, _, stderr = run_cli(
        "export", "--from", "voc", "--in", tmp_path / "voc", "--project", back, "--frames-dir", frames,
        "--reviewer-root", "C:\\Users\\ann\\review",
    )  # fmt: skip
    assert code == 0, stderr
    result = subprocess.run(
        [
            sys.executable,
            str(shared_dir / "vott/validate_vott.py"),
            str(back),
            "--source-folder",
            str(frames),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout
    assert "ok: 1 project, 4 assets, 6 regions" in result.stdout
    vott = json.loads((back / "vott.vott").read_text())
    assert vott["sourceConnection"]["providerOptions"]["folderPath"] == "C:\\Users\\ann\\review\\frames"


def test_coco_export_loads_and_evaluates_in_pycocotools(tmp_path: Path, run_cli: Run) -> None:
    target = make_project(tmp_path / "src")
    out = tmp_path / "coco"
    code, _, stderr = run_cli("export", "--project", target, "--format", "coco", "--out", out, "--split", "1")
    assert code == 0, stderr
    ann = out / "annotations" / "instances_train.json"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == list(CLASSES)
        assert len(gt.getImgIds()) == 4 and len(gt.getAnnIds()) == 6
        for image in gt.loadImgs(gt.getImgIds()):
            assert (out / "images" / image["file_name"]).is_file()
        first = gt.loadImgs([1])[0]
        assert (first["file_name"], first["width"], first["height"]) == ("frame_001.jpg", 320, 240)
        assert gt.loadAnns(gt.getAnnIds(imgIds=[1]))[0]["bbox"] == [10.5, 20.25, 89.5, 179.75]
        results = [
            {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt.loadAnns(gt.getAnnIds())
        ]
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_vott_csv_is_what_vott_writes(shared_dir: Path, tmp_path: Path, run_cli: Run) -> None:
    fixtures = shared_dir / "vott" / "fixtures"
    out = tmp_path / "csv"
    code, _, stderr = run_cli(
        "export", "--project", fixtures / "valid", "--format", "vott-csv", "--out", out,
        "--source-folder", fixtures / "frames",
    )  # fmt: skip
    assert code == 0, stderr
    assert (out / "edge-review-export.csv").read_text(encoding="utf-8") == (
        '"image","xmin","ymin","xmax","ymax","label"\n'
        '"frame_000001.jpg",100,120,180,320,"person"\n'
        '"frame_000001.jpg",300,250,520,370,"vehicle"\n'
        '"frame_000002.jpg",400.5,60.25,460.5,210.25,"person"\n'
        '"cam%201%23frame_000004.jpg",10,10,100,90,"vehicle"'
    )
    assert (out / "cam%201%23frame_000004.jpg").read_bytes() == (
        fixtures / "frames/cam 1#frame_000004.jpg"
    ).read_bytes()


def test_voc_is_laid_out_like_vott(shared_dir: Path, tmp_path: Path, run_cli: Run) -> None:
    fixtures = shared_dir / "vott" / "fixtures"
    out = tmp_path / "voc"
    # the encrypted fixture is what VoTT itself saved: frames are found by name in --source-folder
    code, _, stderr = run_cli(
        "export", "--project", fixtures / "encrypted", "--format", "voc", "--out", out,
        "--source-folder", fixtures / "frames", "--split", "2,1",
    )  # fmt: skip
    assert code == 0, stderr
    xml = (out / "Annotations" / "frame_000001.xml").read_text()
    assert xml.startswith(
        '<annotation verified="yes">\n'
        "    <folder>Annotation</folder>\n"
        "    <filename>frame_000001.jpg</filename>\n"
        "    <path>edge-review-PascalVOC-export/Annotations/frame_000001.jpg</path>\n"
        "    <source>\n"
        "        <database>Unknown</database>\n"
        "    </source>\n"
        "    <size>\n"
        "        <width>640</width>\n"
        "        <height>480</height>\n"
        "        <depth>3</depth>\n"
        "    </size>\n"
        "    <segmented>0</segmented>\n"
        "    <object>\n"
        "    <name>person</name>\n"
        "    <pose>Unspecified</pose>\n"
        "    <truncated>0</truncated>\n"
        "    <difficult>0</difficult>\n"
        "    <bndbox>\n"
        "        <xmin>100</xmin>\n"
        "        <ymin>120</ymin>\n"
        "        <xmax>180</xmax>\n"
        "        <ymax>320</ymax>\n"
        "    </bndbox>\n"
        "</object>\n"
    )
    assert xml.endswith("</object>\n</annotation>")
    assert (out / "Annotations" / "cam%201%23frame_000004.xml").is_file()
    assert (out / "JPEGImages" / "cam%201%23frame_000004.jpg").is_file()
    assert (
        out / "pascal_label_map.pbtxt"
    ).read_text() == "item {\n id: 1\n name: 'person'\n}\nitem {\n id: 2\n name: 'vehicle'\n}\n"
    main = out / "ImageSets" / "Main"
    assert sorted(p.name for p in main.iterdir()) == [
        "person_train.txt",
        "person_val.txt",
        "vehicle_train.txt",
        "vehicle_val.txt",
    ]
    person = (main / "person_train.txt").read_text().splitlines() + (
        main / "person_val.txt"
    ).read_text().splitlines()
    assert sorted(person) == ["cam%201%23frame_000004.jpg -1", "frame_000001.jpg 1", "frame_000002.jpg 1"]
    assert len((main / "person_val.txt").read_text().splitlines()) == 1


def test_yolo_layout_reads_like_ultralytics(tmp_path: Path, run_cli: Run) -> None:
    target = make_project(tmp_path / "src")
    out = tmp_path / "yolo"
    code, _, stderr = run_cli(
        "export", "--project", target, "--format", "yolo", "--out", out, "--split", "0.5,0.5"
    )
    assert code == 0, stderr
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "person", 1: "car", 2: "dog"} and data["nc"] == 3
    assert Path(data["path"]) == out.resolve() and "test" not in data
    listed = []
    for split in ("train", "val"):
        lines = (Path(data["path"]) / data[split]).read_text().splitlines()
        assert len(lines) == 2 and all(line.startswith("./images/") for line in lines)
        listed += lines
    for line in listed:  # Ultralytics: label path = image path with /images/ -> /labels/, suffix .txt
        image = out / line[2:]
        label = Path(str(image).replace("/images/", "/labels/")).with_suffix(".txt")
        assert image.is_file() and label.is_file()
    assert (out / "labels" / "frame_001.txt").read_text() == (
        "0 0.172656 0.458854 0.279687 0.748958\n1 0.719922 0.312500 0.502344 0.375000\n"
    )


def test_automl_csv_has_normalised_two_vertex_rows(tmp_path: Path, run_cli: Run) -> None:
    target = make_project(tmp_path / "src")
    out = tmp_path / "automl"
    code, _, stderr = run_cli(
        "export", "--project", target, "--format", "automl-csv", "--out", out, "--path-prefix", "gs://bucket/ds/",
        "--split", "1,0,0",
    )  # fmt: skip
    assert code == 0, stderr
    rows = (out / "automl.csv").read_text().splitlines()
    assert len(rows) == 6
    assert (
        rows[0] == "TRAIN,gs://bucket/ds/images/frame_001.jpg,person,0.032812,0.084375,,,0.312500,0.833333,,"
    )
    assert all(row.count(",") == 10 for row in rows)
    assert (out / "images" / "cam 1#frame_002.jpg").is_file()
    values = np.array([[float(v) for v in r.split(",")[3:5] + r.split(",")[7:9]] for r in rows])
    assert values.min() >= 0 and values.max() <= 1


def test_split_is_seeded_and_adds_up(tmp_path: Path) -> None:
    def dataset() -> LabeledDataset:
        images = [LabeledImage(f"{i}.jpg", None, 10, 10, np.zeros((0, 4), np.float32), []) for i in range(10)]
        return LabeledDataset("d", [], images)

    a, b, c = dataset(), dataset(), dataset()
    assign_splits(a, (0.8, 0.1, 0.1), seed=5)
    assign_splits(b, (0.8, 0.1, 0.1), seed=5)
    b.images.reverse()
    assign_splits(c, (0.8, 0.1, 0.1), seed=6)
    split_a = {i.file_name: i.split for i in a.images}
    assert split_a == {i.file_name: i.split for i in b.images}
    assert split_a != {i.file_name: i.split for i in c.images}
    assert sorted(split_a.values()).count("train") == 8 and list(split_a.values()).count("test") == 1


def test_user_mistakes_exit_with_a_fix(shared_dir: Path, tmp_path: Path, run_cli: Run) -> None:
    code, _, err = run_cli(
        "export", "--project", tmp_path / "nope", "--format", "coco", "--out", tmp_path / "o"
    )
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    target = make_project(tmp_path / "src")
    code, _, err = run_cli("export", "--project", target, "--format", "tfrecord", "--out", tmp_path / "o")
    assert code == 2 and "unknown export format 'tfrecord'" in err and "coco" in err
    code, _, err = run_cli("export", "--project", target, "--from", "csv", "--in", tmp_path)
    assert code == 2 and "unknown import format" in err
    code, _, err = run_cli("export", "--project", target)
    assert code == 2 and "--format" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, _, err = run_cli("export", "--project", target, "--format", "coco", "--out", tmp_path / "full")
    assert code == 2 and "not empty" in err
    code, _, err = run_cli(
        "export", "--project", target, "--format", "coco", "--out", tmp_path / "o", "--split", "a"
    )
    assert code == 2 and "--split" in err
    # VoTT saved the project: its folder paths are encrypted, so the frames must be named
    fixtures = shared_dir / "vott" / "fixtures"
    code, _, err = run_cli(
        "export", "--project", fixtures / "encrypted", "--format", "coco", "--out", tmp_path / "e"
    )
    assert code == 2 and "--source-folder" in err
    # an unreadable asset file
    asset_file = next(target.glob("*-asset.json"))
    asset_file.write_text("{not json")
    code, _, err = run_cli("export", "--project", target, "--format", "yolo", "--out", tmp_path / "y")
    assert code == 1 and asset_file.name in err and "Traceback" not in err


def test_import_checks_its_input(tmp_path: Path, run_cli: Run) -> None:
    code, _, err = run_cli(
        "export", "--from", "coco", "--in", tmp_path / "missing", "--project", tmp_path / "p"
    )
    assert code == 2 and "does not exist" in err
    (tmp_path / "ds" / "annotations").mkdir(parents=True)
    (tmp_path / "ds" / "annotations" / "instances_train.json").write_text(json.dumps({"images": []}))
    code, _, err = run_cli("export", "--from", "coco", "--in", tmp_path / "ds", "--project", tmp_path / "p")
    assert code == 1 and "not a COCO detection JSON" in err
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "data.yaml").write_text("names: [a]\ntrain: images\n")
    (tmp_path / "y" / "images").mkdir()
    cv2.imwrite(str(tmp_path / "y" / "images" / "a.jpg"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "y" / "labels").mkdir()
    (tmp_path / "y" / "labels" / "a.txt").write_text("3 0.5 0.5 0.1 0.1\n")
    code, _, err = run_cli("export", "--from", "yolo", "--in", tmp_path / "y", "--project", tmp_path / "p")
    assert code == 1 and "a.txt:1" in err


def test_an_interrupted_export_leaves_nothing_half_written(tmp_path: Path, run_cli: Run) -> None:
    """SIGINT while an export copies images: exit 130, OUT stays empty, no partial folder is left,
    and the same command then succeeds (an export is all or nothing)."""
    import signal
    import time

    frames, target = tmp_path / "frames", tmp_path / "vott"
    frames.mkdir()
    data = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()
    boxes = Detections.create([[4, 4, 40, 30]], [0.9], [0], ["person"])
    with VottProject(target, frames, flush_every=0, fsync=False) as project:
        for i in range(1500):
            (frames / f"f{i:04d}.jpg").write_bytes(data)
            project.add_frame(frames / f"f{i:04d}.jpg", 64, 48, boxes)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "agent.cli", "export", "--project", str(target), "--format", "coco",
               "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not list(tmp_path.glob(".out.partial-*")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the export finished before the signal arrived")
    assert proc.returncode == 130, err
    assert "nothing was written" in err
    assert not out.exists() or not any(out.iterdir())
    assert not list(tmp_path.glob(".out.partial-*"))
    code, _, stderr = run_cli("export", "--project", str(target), "--format", "coco", "--out", str(out))
    assert code == 0, stderr
    assert len(list((out / "images").iterdir())) == 1500
