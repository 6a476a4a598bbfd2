"""The scene check's filament palette lookup: one flat index a pixel gives what a lookup of each
pixel's own (L, a, b) bin gives."""

from __future__ import annotations

import cv2
import numpy as np

from agent.alerts.scene import PALETTE_BIN, SceneCheck, small_picture
from agent.config.scene import SceneSettings


def test_each_pixel_is_filament_coloured_exactly_when_its_colour_bin_is_in_the_palette() -> None:
    rng = np.random.default_rng(3)
    check = SceneCheck(SceneSettings(), ["nozzle", "print", "raft"])
    for _ in range(5):
        check._palette = rng.random(check._palette.shape) < 0.3
        patches = rng.integers(0, 256, (9, 16, 3), dtype=np.uint8)  # 40-pixel patches of many colours
        image = cv2.resize(patches, (640, 360), interpolation=cv2.INTER_NEAREST)
        picture = small_picture(image, 80)
        found = check._filament_coloured(picture)
        assert found.shape == picture.shape[:2] and found.dtype == bool
        expected = [
            bool(check._palette[int(l_) // PALETTE_BIN, int(a) // PALETTE_BIN, int(b) // PALETTE_BIN])
            for l_, a, b in picture.reshape(-1, 3)
        ]
        assert found.reshape(-1).tolist() == expected
        assert 0 < found.mean() < 1
