"""VoTT 2.2.0 writer and reader: projects the shared validator accepts, ids VoTT computes,
resuming, removing frames, and reading projects back (also VoTT-saved, encrypted ones)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from agent.config.output import DEFAULT_SECURITY_TOKEN
from agent.detections import Detections
from agent.errors import ConfigError, UserError
from agent.vott import (
    SCORES_DIR,
    TAG_COLORS,
    VottProject,
    asset_id,
    asset_json,
    file_uri,
    load_project,
    make_asset,
    native_path_from_uri,
    parse_regions,
)
from tests.helpers import load_validator, wait_until

LABELS = ("person", "car", "dog")


@pytest.fixture(scope="module")
def validator(shared_dir: Path) -> ModuleType:
    """The shared validator, imported as a module to use its reference id functions."""
    return load_validator(shared_dir)


def validate(shared_dir: Path, target: Path, frames: Path, *extra: str) -> str:
    """Run the validator; return its output after asserting it passed."""
    result = subprocess.run(
        [sys.executable, str(shared_dir / "vott" / "validate_vott.py"), str(target), "--source-folder", str(frames),
         *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error:" not in result.stdout
    return result.stdout


def write_image(path: Path, width: int = 160, height: int = 120) -> Path:
    image = np.random.default_rng(len(path.name)).integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(path.suffix or ".jpg", image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def dets(boxes: list[list[float]], classes: list[int], scores: list[float] | None = None) -> Detections:
    return Detections.create(boxes, scores or [0.9] * len(boxes), classes, LABELS)


def add_frames(project: VottProject, frames: Path, count: int) -> list[str | None]:
    """``count`` small frames ``f0.jpg``... with one box each; their asset ids."""
    return [
        project.add_frame(write_image(frames / f"f{i}.jpg"), 160, 120, dets([[1, 1, 50, 50]], [0])).asset_id
        for i in range(count)
    ]


def test_ids_match_the_spec_examples() -> None:
    assert asset_id("/home/user/frames/frame_000001.jpg") == "96e7d45170c8388ab2327b8a826019cb"
    assert (
        file_uri("C:\\Users\\user\\frames\\frame_000001.jpg") == "file:C:/Users/user/frames/frame_000001.jpg"
    )
    assert asset_id("C:\\Users\\user\\frames\\frame_000001.jpg") == "d40bf4f2999a926d309fbff4a4ff8b60"
    assert (
        file_uri("/home/user/frames/cam 1#frame_000004.jpg")
        == "file:/home/user/frames/cam%201%23frame_000004.jpg"
    )
    assert asset_id("/home/user/frames/cam 1#frame_000004.jpg") == "d3d161285b0cd10f0e056b54892e45f2"
    assert file_uri("\\\\srv\\share\\frames\\a b.jpg") == "file://srv/share/frames/a%20b.jpg"
    assert asset_id("\\\\srv\\share\\frames\\a b.jpg") == "08b6dee9bc41d8acd8bef3264e683d2a"


def test_assets_equal_the_valid_fixture(shared_dir: Path) -> None:
    data = json.loads((shared_dir / "vott/fixtures/valid/edge-review.vott").read_text())
    for aid, asset in data["assets"].items():
        native = native_path_from_uri(asset["path"])
        assert asset_id(native) == aid
        size = asset["size"]
        assert make_asset(native, size["width"], size["height"]) == asset


def test_uri_and_ids_agree_with_the_validator_on_awkward_names(validator: ModuleType) -> None:
    rng = np.random.default_rng(7)
    alphabet = [*"abcXYZ019 #?%&=+$,;:@!*'()[]{}~-_.^`", "é", "ü", "日", "本", "😀"]
    for _ in range(300):
        name = "".join(rng.choice(alphabet, size=int(rng.integers(1, 12)))) + ".jpg"
        for folder in ("/home/ann/review/frames", "C:\\Users\\ann\\review\\frames", "\\\\srv\\share\\frames"):
            native = validator.vott_discovered_path(folder, [name])
            assert file_uri(native) == validator.vott_file_uri(native)
            assert asset_id(native) == validator.scan_identity(folder, [name], "2.2.0", False)[1]


@pytest.mark.parametrize(
    "names",
    [
        ["frame_000001.jpg", "frame_000002.jpg", "frame_000003.png"],
        ["cam 1#frame 2.jpg", "what?.jpg", "100% [x] & y=z.jpg", "Ölberg_日本 😀.jpg", "a'b(c).JPG"],
    ],
    ids=["plain", "awkward"],
)
def test_written_project_passes_the_validator(shared_dir: Path, tmp_path: Path, names: list[str]) -> None:
    frames, target = tmp_path / "frames", tmp_path / "vott"
    frames.mkdir()
    with VottProject(target, frames, tags=["person"], flush_every=0) as project:
        for i, name in enumerate(names):
            write_image(frames / name)
            aid = project.add_frame(
                frames / name,
                160,
                120,
                dets([[10.5, 20.25, 60, 100], [50, 5, 170, 130]], [0, 1 + i % 2]),
                model="m",
            ).asset_id
            assert aid == asset_id(str(frames / name))
        write_image(frames / "empty.jpg")
        assert project.add_frame(frames / "empty.jpg", 160, 120, Detections.empty(LABELS)).asset_id is None
    out = validate(shared_dir, target, frames, "--warnings-as-errors")
    assert f"{len(names)} assets, {2 * len(names)} regions" in out
    vott = json.loads((target / "vott.vott").read_text(encoding="utf-8"))
    assert vott["securityToken"] == DEFAULT_SECURITY_TOKEN
    assert vott["activeLearningSettings"]["autoDetect"] is False
    assert [t["name"] for t in vott["tags"]] == ["person", "car", "dog"][: len(vott["tags"])]
    assert [t["color"] for t in vott["tags"]] == list(TAG_COLORS[: len(vott["tags"])])
    assert len(vott["id"]) == 9 and vott["id"] != vott["sourceConnection"]["id"]
    meta = json.loads((target / f"{asset_id(str(frames / names[0]))}-asset.json").read_text())
    # clipped to the image: the second box ended at 170, 130 in a 160 x 120 image
    assert meta["regions"][1]["boundingBox"] == {"height": 115, "width": 110, "left": 50, "top": 5}
    assert meta["regions"][0]["points"] == [
        {"x": 10.5, "y": 20.25}, {"x": 60, "y": 20.25}, {"x": 60, "y": 100}, {"x": 10.5, "y": 100}
    ]  # fmt: skip
    assert len({r["id"] for r in meta["regions"]}) == 2 and all(len(r["id"]) <= 10 for r in meta["regions"])


@pytest.mark.parametrize(
    "reviewer_root", ["C:\\Users\\ann\\review", "\\\\nas\\share\\review", "/home/ann/review"]
)
def test_reviewer_root_sets_paths_and_ids(
    shared_dir: Path, validator: ModuleType, tmp_path: Path, reviewer_root: str
) -> None:
    frames, target = tmp_path / "frames", tmp_path / "projects" / "batch 1"
    frames.mkdir()
    names = ["a b#1.jpg", "é.jpg"]
    with VottProject(target, frames, local_root=tmp_path, reviewer_root=reviewer_root) as project:
        for name in names:
            write_image(frames / name)
            project.add_frame(frames / name, 160, 120, dets([[1, 2, 30, 40]], [2]))
    validate(shared_dir, target, frames)
    vott = json.loads((target / "batch 1.vott").read_text())
    windows = not reviewer_root.startswith("/")
    sep = "\\" if windows else "/"
    folder = vott["sourceConnection"]["providerOptions"]["folderPath"]
    assert folder == reviewer_root + sep + "frames"
    assert vott["targetConnection"]["providerOptions"]["folderPath"] == sep.join(
        [reviewer_root, "projects", "batch 1"]
    )
    for name in names:
        expected = validator.scan_identity(folder, [name], "2.2.0", False)[1]
        assert expected in vott["assets"]
        assert (target / f"{expected}-asset.json").is_file()
    # the reader maps the reviewer's paths back to the local frames through the target folder
    loaded = load_project(target)
    assert sorted(a.image_path for a in loaded.assets) == sorted(frames / n for n in names)  # type: ignore[type-var]


def test_windows_reviewer_refuses_names_windows_cannot_hold(tmp_path: Path) -> None:
    project = VottProject(tmp_path / "t", tmp_path / "f", reviewer_root="D:\\review")
    with pytest.raises(UserError, match="Windows"):
        project.add_frame(tmp_path / "f" / "what?.jpg", 10, 10, dets([[1, 1, 5, 5]], [0]))


def test_resume_after_reopen_keeps_id_tags_and_assets(shared_dir: Path, tmp_path: Path) -> None:
    frames, target = tmp_path / "frames", tmp_path / "vott"
    frames.mkdir()
    for i in range(4):
        write_image(frames / f"f{i}.jpg")
    with VottProject(target, frames, name="edge review", tags=["dog"]) as project:
        first = project.add_frame(frames / "f0.jpg", 160, 120, dets([[1, 1, 50, 50]], [0])).asset_id
        project.add_frame(frames / "f1.jpg", 160, 120, dets([[1, 1, 50, 50]], [1]))
        pid = project.id
    # a new project gets a new id: two projects of the same name never share one (VoTT's recent list)
    other = VottProject(tmp_path / "other" / "vott", tmp_path / "other" / "frames", name="edge review")
    assert other.id != pid
    with VottProject(target, frames) as again:  # the name is found from the folder
        assert again.name == "edge review" and again.id == pid
        assert again.tags == ["dog", "person", "car"]
        assert len(again) == 2
        again.add_frame(frames / "f2.jpg", 160, 120, dets([[1, 1, 50, 50]], [2]))
    vott = json.loads((target / "edge review.vott").read_text())
    assert list(vott["assets"]) == [first, asset_id(str(frames / "f1.jpg")), asset_id(str(frames / "f2.jpg"))]
    assert vott["lastVisitedAssetId"] == first
    validate(shared_dir, target, frames, "--warnings-as-errors")

    # killed before the project file was saved: reopening adds the asset file back
    crashed = VottProject(target, frames, flush_every=0)
    crashed.add_frame(frames / "f3.jpg", 160, 120, dets([[1, 1, 50, 50]], [0]))
    del crashed
    with VottProject(target, frames) as recovered:
        assert asset_id(str(frames / "f3.jpg")) in recovered.assets
    validate(shared_dir, target, frames, "--warnings-as-errors")


def test_reopen_with_another_reviewer_root_is_refused(tmp_path: Path) -> None:
    VottProject(tmp_path / "t", tmp_path / "f", reviewer_root="/home/ann/review").close()
    with pytest.raises(ConfigError, match="reviewer folder"):
        VottProject(tmp_path / "t", tmp_path / "f", reviewer_root="/home/bob/review")


def test_remove_frame_leaves_no_dangling_files(shared_dir: Path, tmp_path: Path) -> None:
    frames, target = tmp_path / "frames", tmp_path / "vott"
    frames.mkdir()
    with VottProject(target, frames) as project:
        ids = add_frames(project, frames, 3)
        assert project.remove_frame(frames / "f0.jpg")
        (frames / "f0.jpg").unlink()  # the quota evicts the image too
        assert not project.remove_frame(frames / "f0.jpg")
    vott = json.loads((target / "vott.vott").read_text())
    assert list(vott["assets"]) == ids[1:]
    assert vott["lastVisitedAssetId"] == ids[1]
    assert sorted(p.name for p in target.glob("*-asset.json")) == sorted(f"{i}-asset.json" for i in ids[1:])
    assert sorted(p.stem for p in (target / SCORES_DIR).iterdir()) == sorted(ids[1:])  # type: ignore[type-var]
    validate(shared_dir, target, frames, "--warnings-as-errors")


def test_a_kept_frame_is_listed_within_max_unsaved_s_whatever_the_batching(tmp_path: Path) -> None:
    """With batching that would wait for 1,000 frames or an hour, a running agent's ``catch_up``
    still lists a new frame once it has waited ``max_unsaved_s``."""
    frames, target = tmp_path / "frames", tmp_path / "vott"
    frames.mkdir()
    with VottProject(
        target, frames, flush_every=1000, min_save_interval_s=3600, max_unsaved_s=1.0
    ) as project:
        project.save()
        aid = project.add_frame(
            write_image(frames / "a.jpg"), 160, 120, dets([[10, 10, 50, 50]], [0])
        ).asset_id

        def listed() -> bool:
            project.catch_up()
            return aid in json.loads((target / "vott.vott").read_text())["assets"]

        assert not listed(), "saved at once: the test would prove nothing"
        assert wait_until(listed, timeout_s=10)


def test_frame_with_no_detections_left_replaces_the_old_asset(tmp_path: Path) -> None:
    project = VottProject(tmp_path / "t", tmp_path / "f")
    aid = project.add_frame(tmp_path / "f" / "a.jpg", 100, 100, dets([[10, 10, 20, 20]], [0])).asset_id
    # a box entirely outside the image has no area left after clipping
    assert (
        project.add_frame(tmp_path / "f" / "a.jpg", 100, 100, dets([[200, 200, 300, 300]], [0])).asset_id
        is None
    )
    assert aid not in project.assets and not project.asset_file(str(aid)).exists()


def test_load_project_reads_boxes_labels_and_scores(tmp_path: Path) -> None:
    frames, target = tmp_path / "frames", tmp_path / "vott"
    frames.mkdir()
    write_image(frames / "x.jpg")
    with VottProject(target, frames) as project:
        project.add_frame(
            frames / "x.jpg", 160, 120, dets([[10.25, 20, 60, 100], [5, 5, 15, 25]], [1, 0], [0.8, 0.45]),
            model="ssd", timestamp=1_700_000_000.0,
        )  # fmt: skip
    loaded = load_project(target)
    assert loaded.tags == ["car", "person"]  # in the order first seen
    (asset,) = loaded.assets
    assert (asset.file_name, asset.image_path, asset.width, asset.height, asset.state) == (
        "x.jpg", frames / "x.jpg", 160, 120, 2
    )  # fmt: skip
    np.testing.assert_allclose(asset.xyxy, np.array([[10.25, 20, 60, 100], [5, 5, 15, 25]]))
    assert asset.labels == ["car", "person"]
    assert asset.scores is not None
    np.testing.assert_allclose(asset.scores, [0.8, 0.45], atol=1e-5)
    sidecar = json.loads((target / SCORES_DIR / f"{asset.id}.json").read_text())
    assert sidecar["model"] == "ssd" and sidecar["timestamp"] == "2023-11-14T22:13:20.000Z"
    assert sidecar["regions"][0]["box_xyxy"] == [10.25, 20, 60, 100]


def test_load_encrypted_project_needs_the_source_folder(shared_dir: Path) -> None:
    fixtures = shared_dir / "vott" / "fixtures"
    loaded = load_project(fixtures / "encrypted")
    assert loaded.encrypted and all(a.image_path is None for a in loaded.assets)
    with pytest.raises(ConfigError, match="--source-folder"):
        loaded.require_images(loaded.assets)
    loaded = load_project(fixtures / "encrypted", fixtures / "frames")
    loaded.require_images(loaded.assets)
    names = {a.file_name: a for a in loaded.assets}
    assert set(names) == {"frame_000001.jpg", "frame_000002.jpg", "cam 1#frame_000004.jpg"}
    assert names["cam 1#frame_000004.jpg"].image_path == fixtures / "frames" / "cam 1#frame_000004.jpg"
    np.testing.assert_allclose(names["frame_000001.jpg"].xyxy, [[100, 120, 180, 320], [300, 250, 520, 370]])
    assert (
        names["frame_000001.jpg"].labels == ["person", "vehicle"] and names["frame_000001.jpg"].scores is None
    )


def test_asset_json_is_vott_asset_metadata() -> None:
    meta = asset_json("/home/user/frames/frame_000001.jpg", 640, 480, dets([[100, 120, 180, 320]], [0]))
    assert set(meta) == {"asset", "regions", "version"} and meta["version"] == "2.2.0"
    assert meta["asset"]["id"] == "96e7d45170c8388ab2327b8a826019cb" and meta["asset"]["state"] == 2
    (region,) = meta["regions"]
    assert region["type"] == "RECTANGLE" and region["tags"] == ["person"]
    assert region["boundingBox"] == {"height": 200, "width": 80, "left": 100, "top": 120}
    # what the review receiver does with an annotation message
    back = parse_regions(meta["regions"]).to_detections([0.7], labels=["car", "person"])
    assert back.label_names() == ["person"] and back.labels == ("car", "person")
    np.testing.assert_allclose(back.xyxy, [[100, 120, 180, 320]])
    with pytest.raises(ValueError, match="boundingBox"):
        parse_regions([{"tags": ["x"], "boundingBox": {"left": "1"}}])


def test_user_mistakes_get_a_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="absolute"):
        VottProject(tmp_path / "t", tmp_path / "f", reviewer_root="review")
    with pytest.raises(ConfigError, match="name"):
        VottProject(tmp_path / "t", tmp_path / "f", name="a/b")
    project = VottProject(tmp_path / "t", tmp_path / "f")
    with pytest.raises(UserError, match="directly in the frames folder"):
        project.add_frame(tmp_path / "elsewhere.jpg", 10, 10, dets([[1, 1, 5, 5]], [0]))
    with pytest.raises(ConfigError, match=r"no \.vott"):
        load_project(tmp_path / "f")
    (tmp_path / "t" / "t.vott").write_text("{broken")
    with pytest.raises(UserError, match="cannot read"):
        load_project(tmp_path / "t")


def test_group_sync_flushes_assets_before_the_project_lists_them(shared_dir: Path, tmp_path: Path) -> None:
    from agent.fsutil import GroupSync

    frames, target = tmp_path / "frames", tmp_path / "vott"
    frames.mkdir()
    group = GroupSync(tmp_path, interval_s=3600.0)  # only the explicit flushes
    with VottProject(target, frames, flush_every=0, group_sync=group) as project:
        for i in range(4):
            write_image(frames / f"f{i}.jpg")
            project.add_frame(frames / f"f{i}.jpg", 160, 120, dets([[1, 1, 50, 50]], [0]))
        assert group.flushes == 0  # four frames' files wait for one flush
        project.save()
        assert group.flushes == 1  # before the project file lists them
    assert group.flushes == 1  # nothing new was written after the save
    validate(shared_dir, target, frames, "--warnings-as-errors")


def test_assets_emptied_by_a_power_cut_are_dropped_on_reopen(shared_dir: Path, tmp_path: Path) -> None:
    frames, target = tmp_path / "frames", tmp_path / "vott"
    frames.mkdir()
    with VottProject(target, frames) as project:
        ids = add_frames(project, frames, 3)
    (target / f"{ids[2]}-asset.json").write_bytes(b"")  # what delayed allocation leaves after a cut
    (frames / "f1.jpg").write_bytes(b"")  # or a frame whose data never reached the disk
    with VottProject(target, frames) as recovered:
        assert set(recovered.assets) == {ids[0]}
    assert not (target / f"{ids[2]}-asset.json").exists()
    assert not (target / f"{ids[1]}-asset.json").exists()
    (frames / "f1.jpg").unlink()  # what the harvest store's eviction would do
    validate(shared_dir, target, frames, "--warnings-as-errors")


def test_written_files_get_an_ordinary_files_permissions(tmp_path: Path) -> None:
    """A reviewer's sync or share running as another user must be able to read the project: the
    atomic writes honour the umask like ``open()`` does (mkstemp alone would leave them 0600)."""
    ordinary = tmp_path / "ordinary.txt"
    ordinary.write_text("x")
    expected = ordinary.stat().st_mode & 0o777
    frames, target = tmp_path / "frames", tmp_path / "vott"
    frames.mkdir()
    with VottProject(target, frames) as project:
        project.write_frame(frames / "kept.jpg", b"\xff\xd8 not a real jpeg \xff\xd9")
        (aid,) = add_frames(project, frames, 1)
    written = [frames / "kept.jpg", target / f"{aid}-asset.json", target / "vott.vott"]
    assert {p.name: p.stat().st_mode & 0o777 for p in written} == dict.fromkeys(
        (p.name for p in written), expected
    )
