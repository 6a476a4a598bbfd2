"""End to end: a real agent labels real frames and publishes them to a real Mosquitto; two
receivers in one shared-subscription group build VoTT projects from them.

The agent (``edge-agent run``, the print3d SSD model from ../shared on its sample frames and
flipped/cropped/darkened variants of them) and both receivers (``edge-agent review``) run as
separate processes. The receivers share one root, as a shared group must (the broker may hand a
frame to one receiver and its annotation to the other), and close a batch every 5 frames.
Afterwards every frame is in exactly one batch, every batch is closed and passes VoTT's
validator with its frames folder, and the pre-labels equal the agent's own VoTT project.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from agent.vott import load_project
from tests.mosquitto import mosquitto  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parent.parent
DEVICE = "printer-1"
BATCH_SIZE = 5


def make_frames(images: Path, folder: Path) -> list[str]:
    """The sample frames and three variants of each (flipped, centre crop, darker), as JPEGs."""
    folder.mkdir()
    names = []
    for path in sorted(images.glob("*.jpg")):
        image = cv2.imread(str(path))
        h, w = image.shape[:2]
        variants = {
            "orig": image,
            "flip": cv2.flip(image, 1),
            "crop": image[h // 10 : h - h // 10, w // 10 : w - w // 10],
            "dark": (image * 0.7).astype(np.uint8),
        }
        for kind, picture in variants.items():
            name = f"{path.stem}_{kind}"
            cv2.imwrite(str(folder / f"{name}.jpg"), picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
            names.append(name)
    return names


def spawn(args: list[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", *args], stdout=log, stderr=log, env=env, cwd=cwd
        )


def wait_until(condition, timeout_s: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    pytest.fail(f"timed out waiting for {what}\n{tails}")


def read_stats(root: Path, client_id: str) -> dict:
    path = root / ".edge-agent-review" / f"stats-{client_id}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_agent_to_two_shared_receivers_gives_every_frame_once_in_valid_projects(
    mosquitto,  # noqa: F811
    tmp_path,
    shared_dir,
    capsys,
):
    started = time.monotonic()
    broker = mosquitto()
    model = shared_dir / "models" / "print3d" / "print3d_2020-10-23_ssd_uint8.tflite"
    names = make_frames(shared_dir / "models" / "print3d" / "images", tmp_path / "camera")
    root = tmp_path / "review"

    clients = ["reviewer-a", "reviewer-b"]
    for client in clients:
        config = {
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "client_id": client,
                "shared_group": "reviewers",
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 1,
            },
            "root": str(root),
            "batch_by": "count",
            "batch_size": BATCH_SIZE,
            "close_grace_s": 20,
            "stats_interval_s": 1,
            "min_free_mb": 0,
        }
        (tmp_path / f"{client}.yaml").write_text(yaml.safe_dump(config))
    agent_config = {
        "source": {"url": str(tmp_path / "camera"), "id": "cam", "watch": True, "watch_poll_s": 0.5},
        "detector": {"model": str(model)},
        "output": {"dir": str(tmp_path / "agent-data")},
        "mqtt": {
            "enabled": True,
            "host": broker.host,
            "port": broker.port,
            "device_id": DEVICE,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1,
        },
    }
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(agent_config))

    logs = [tmp_path / f"{c}.log" for c in clients] + [tmp_path / "agent.log"]
    receivers = [
        spawn(["review", "--config", str(tmp_path / f"{c}.yaml")], tmp_path / f"{c}.log", tmp_path)
        for c in clients
    ]
    agent = None
    try:
        wait_until(
            lambda: all(read_stats(root, c).get("subscribed") for c in clients),
            30,
            "receivers subscribed",
            logs,
        )
        agent = spawn(["run", "--config", str(tmp_path / "agent.yaml")], tmp_path / "agent.log", tmp_path)

        def stored(kind: str, suffix: str) -> list[str]:
            return [p.name[: -len(suffix)] for p in root.glob(f"{DEVICE}/*/{kind}/*{suffix}")]

        wait_until(
            lambda: (
                len(stored("frames", ".jpg")) >= len(names)
                and len(stored("annotations", ".json")) >= len(names)
            ),
            120,
            "every frame and annotation on disk",
            logs,
        )
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 143, (tmp_path / "agent.log").read_text()[-3000:]

        # Close the last batch on demand while the receivers run; the command waits for them.
        proc = subprocess.run(
            [sys.executable, "-m", "agent.cli", "review", "--config", str(tmp_path / "reviewer-a.yaml"), "--close-batch"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        wait_until(
            lambda: all((b / "CLOSED").exists() for b in (root / DEVICE).iterdir() if b.is_dir()),
            30,
            "every batch closed",
            logs,
        )
        for receiver in receivers:
            receiver.send_signal(signal.SIGTERM)
        for receiver, log_path in zip(receivers, logs, strict=False):
            assert receiver.wait(30) == 143, log_path.read_text()[-3000:]
    finally:
        for proc_ in [*receivers, agent]:
            if proc_ is not None and proc_.poll() is None:
                proc_.kill()

    # Every frame exactly once, in batches of BATCH_SIZE (the last one closed on demand).
    batches = sorted(b for b in (root / DEVICE).iterdir() if b.is_dir())
    frame_ids = Counter(p.stem for b in batches for p in (b / "frames").glob("*.jpg"))
    assert set(frame_ids) == {f"cam_{name}" for name in names}
    assert set(frame_ids.values()) == {1}
    assert [len(list((b / "frames").glob("*.jpg"))) for b in batches[:-1]] == [BATCH_SIZE] * (
        len(batches) - 1
    )
    assert "closed" in proc.stdout and batches[-1].name in proc.stdout

    # Both receivers took part; nothing was dropped.
    stats = {c: read_stats(root, c) for c in clients}
    assert all(s["received"] > 0 for s in stats.values()), stats
    assert sum(s["frames_written"] for s in stats.values()) == len(names)
    assert sum(s["annotations_stored"] for s in stats.values()) == len(names)
    assert all(s["dropped_total"] == 0 for s in stats.values()), stats

    # Every project passes VoTT's validator against its own frames folder.
    validator = shared_dir / "vott" / "validate_vott.py"
    for batch in batches:
        result = subprocess.run(
            [sys.executable, str(validator), str(batch / "vott"), "--source-folder", str(batch / "frames")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{batch.name}:\n{result.stdout}{result.stderr}"

    # The pre-labels are the agent's own: same frames with assets, same labels and boxes.
    theirs = {a.file_name: a for a in load_project(tmp_path / "agent-data" / "vott").assets}
    ours = {a.file_name: a for b in batches for a in load_project(b / "vott").assets}
    assert sorted(ours) == sorted(theirs) and ours
    for name, asset in ours.items():
        assert asset.labels == theirs[name].labels, name
        np.testing.assert_allclose(asset.xyxy, theirs[name].xyxy, atol=0.011)
        assert asset.scores is not None and not np.isnan(asset.scores).any()
    with capsys.disabled():
        print(
            f"\n[review e2e] {len(names)} frames, {len(ours)} pre-labelled, {len(batches)} batches; messages per "
            f"receiver {[s['received'] for s in stats.values()]}; {time.monotonic() - started:.1f} s"
        )
