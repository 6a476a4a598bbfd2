"""The change gate on generated scenes: which frames reach the detector."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from agent.config.gate import GateSettings
from agent.frames import Frame
from agent.gate import ChangeGate

WIDTH, HEIGHT = 640, 360
FPS = 10.0


def _scene(rng: np.random.Generator) -> np.ndarray:
    """A static, textured room: a lit gradient, furniture-like shapes, a line of text."""
    x = np.linspace(40, 170, WIDTH, dtype=np.float32)
    y = np.linspace(0, 50, HEIGHT, dtype=np.float32)[:, None]
    gray = (x[None, :] + y).astype(np.uint8)
    image = cv2.merge([gray, (gray * 0.9).astype(np.uint8), (gray * 0.8).astype(np.uint8)])
    for _ in range(12):
        x1, y1 = int(rng.integers(0, WIDTH - 80)), int(rng.integers(0, HEIGHT - 60))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(
            image, (x1, y1), (x1 + int(rng.integers(20, 80)), y1 + int(rng.integers(20, 60))), color, -1
        )
    cv2.circle(image, (500, 90), 40, (30, 200, 220), -1)
    cv2.line(image, (0, 300), (WIDTH, 280), (20, 20, 20), 3)
    cv2.putText(image, "PRINTER 3", (30, 340), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (240, 240, 240), 2)
    return image


class StaticSceneWithEvents:
    """2,000 frames of a noisy static scene with slow lighting drift and 20 short events:
    an object (32-64 px) appears for 3-6 frames, moving a little, then leaves."""

    def __init__(self, frames: int = 2000, events: int = 20, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.frames = frames
        self.base = _scene(rng).astype(np.int16)
        # A pool of sensor-noise fields (sigma 6 grey levels) reused at random: cheap per frame.
        self.noise = [rng.normal(0, 6, (HEIGHT, WIDTH, 3)).astype(np.int16) for _ in range(8)]
        self.noise_pick = rng.integers(0, len(self.noise), frames)
        starts = np.linspace(40, frames - 40, events).astype(int) + rng.integers(-10, 10, events)
        self.objects: dict[int, tuple[int, int, int, int]] = {}  # frame -> x, y, size, grey
        for start in starts:
            size = int(rng.integers(32, 65))
            x, y = int(rng.integers(0, WIDTH - size - 30)), int(rng.integers(0, HEIGHT - size - 30))
            local = int(self.base[y : y + size, x : x + size].mean())
            grey = (local + 128) % 256  # clearly different from what it covers
            for k in range(int(rng.integers(3, 7))):
                self.objects[int(start) + k] = (x + 4 * k, y + 2 * k, size, grey)

    def frame(self, index: int) -> Frame:
        drift = 6.0 * np.sin(2 * np.pi * index / self.frames)  # lighting changes slowly
        image = self.base + self.noise[self.noise_pick[index]] + np.int16(round(drift))
        image = np.clip(image, 0, 255).astype(np.uint8)
        if index in self.objects:
            x, y, size, grey = self.objects[index]
            cv2.rectangle(image, (x, y), (x + size, y + size), (grey, grey, grey), -1)
        return Frame(
            image=image, source_id="cam", sequence=index, timestamp=1.7e9 + index / FPS, name=str(index)
        )


def test_gate_skips_static_frames_and_runs_every_event_frame() -> None:
    scene = StaticSceneWithEvents()
    settings = GateSettings(enabled=True)
    gate = ChangeGate(settings)
    inferred: list[int] = []
    for index in range(scene.frames):
        infer, reason = gate.should_infer(scene.frame(index), now=index / FPS)
        assert reason in {"warmup", "change", "max_skip_interval", "no_change"}
        if infer:
            inferred.append(index)

    event_frames = set(scene.objects)
    assert len(event_frames) >= 60
    missed = sorted(event_frames - set(inferred))
    assert not missed, f"event frames not inferred: {missed}"
    skipped_share = 1 - len(inferred) / scene.frames
    assert skipped_share >= 0.80, f"only {skipped_share:.1%} skipped"
    # A static scene is still looked at: no gap between inferences beyond the maximum skip.
    gaps = np.diff(np.asarray(inferred)) / FPS
    assert gaps.max() <= settings.max_skip_interval_s + 1 / FPS
    # The counts match what happened.
    stats = gate.stats()
    assert stats["frames"] == scene.frames
    assert stats["inferred"] == len(inferred)
    assert stats["skipped"] == scene.frames - len(inferred)
    assert stats["reasons"]["warmup"] == settings.warmup_frames
    assert stats["reasons"]["max_skip_interval"] > 0


def test_object_that_stays_becomes_background_and_is_still_inferred_periodically() -> None:
    scene = StaticSceneWithEvents(frames=600, events=0)
    gate = ChangeGate(GateSettings(enabled=True, max_skip_interval_s=5.0))
    reasons: dict[int, str] = {}
    for index in range(600):
        frame = scene.frame(index)
        if index >= 200:  # something falls over at frame 200 and lies still
            cv2.circle(frame.image, (300, 200), 30, (250, 250, 250), -1)
        reasons[index] = gate.should_infer(frame, now=index / FPS).reason
    assert reasons[200] == "change"
    settled = [i for i in range(300, 600) if reasons[i] != "no_change"]
    assert settled, "a static scene must still be inferred now and then"
    assert all(reasons[i] == "max_skip_interval" for i in settled)
    assert np.diff(settled).max() <= 5.0 * FPS + 1


def test_disabled_gate_infers_every_frame() -> None:
    scene = StaticSceneWithEvents(frames=30, events=0)
    gate = ChangeGate()  # the default: off
    assert all(gate.should_infer(scene.frame(i), now=i / FPS) == (True, "disabled") for i in range(30))
    assert gate.stats()["skipped"] == 0


def test_new_resolution_or_source_warms_up_again() -> None:
    scene = StaticSceneWithEvents(frames=40, events=0)
    gate = ChangeGate(GateSettings(enabled=True, warmup_frames=3))
    for index in range(20):
        gate.should_infer(scene.frame(index), now=index / FPS)
    assert gate.should_infer(scene.frame(20), now=2.0).reason == "no_change"
    other = scene.frame(21)
    other.source_id = "door"
    assert gate.should_infer(other, now=2.1).reason == "warmup"
    small = scene.frame(22)
    small.image = cv2.resize(small.image, (320, 180))
    assert gate.should_infer(small, now=2.2).reason == "warmup"


def test_gate_settings_refuse_even_blur_kernel() -> None:
    with pytest.raises(ValidationError, match="must be odd"):
        GateSettings(blur_kernel_px=4)
    with pytest.raises(ValidationError):
        GateSettings(pixel_threshold=300)
    with pytest.raises(ValidationError):
        GateSettings(threshold=20)  # type: ignore[call-arg]
