"""Preprocessing in one buffer: resize, RGB and quantisation in place give the tensor a plain
pipeline of separate steps gives, padding included, when the frame size changes too."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from agent.detect.preprocess import PAD_VALUE, Preprocessor, letterbox_geometry, quantization_lut


def _reference(
    image: np.ndarray, shape: tuple[int, int, int, int], dtype: np.dtype, quant: tuple[float, int], *,
    letterbox: bool, rgb: bool, mean: list[float] | None, std: list[float] | None,
) -> np.ndarray:  # fmt: skip
    """The tensor by the book: a fresh padded canvas, resize, colour order, then the pixel values."""
    _, in_h, in_w, _ = shape
    h, w = image.shape[:2]
    canvas = np.full((in_h, in_w, 3), PAD_VALUE, np.uint8)
    if letterbox:
        new_w, new_h, top, _, left, _ = letterbox_geometry(w, h, in_w, in_h)
    else:
        new_w, new_h, top, left = in_w, in_h, 0, 0
    canvas[top : top + new_h, left : left + new_w] = cv2.resize(
        image, (new_w, new_h), interpolation=cv2.INTER_LINEAR
    )
    pixels = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB) if rgb else canvas
    if dtype == np.float32:
        m = np.broadcast_to(np.asarray(mean or [0.0], np.float32), (3,))
        s = np.broadcast_to(np.asarray(std or [255.0], np.float32), (3,))
        return ((pixels - m) / s)[None].astype(np.float32)
    if mean is None and dtype == np.uint8:
        return pixels[None]
    lut = quantization_lut(np.broadcast_to(np.asarray(mean, float), (3,)), np.broadcast_to(np.asarray(std, float), (3,)), quant[0], quant[1], dtype)  # fmt: skip
    out = np.stack([lut[c][pixels[..., c]] for c in range(3)], axis=-1)
    return out.view(dtype)[None]


@pytest.mark.parametrize(
    ("dtype", "quant", "mean", "std"),
    [
        (np.uint8, (0.0, 0), None, None),  # raw pixels (SSD uint8)
        (np.int8, (1 / 255, -128), [0.0], [255.0]),  # Ultralytics int8: the "+128" table
        (np.uint8, (0.0078125, 128), [127.5], [127.5]),  # a table that is not a pure offset
        (np.int8, (0.02, 3), [123.7, 116.3, 103.5], [58.4, 57.1, 57.4]),  # per-channel tables
        (np.float32, (0.0, 0), [0.0], [255.0]),
    ],
)
@pytest.mark.parametrize(("letterbox", "rgb"), list(itertools.product([False, True], repeat=2)))
def test_in_place_preprocessing_equals_separate_steps(
    dtype: type, quant: tuple[float, int], mean: list[float] | None, std: list[float] | None, letterbox: bool, rgb: bool
) -> None:  # fmt: skip
    shape = (1, 96, 128, 3)
    pre = Preprocessor(shape, np.dtype(dtype), quant, letterbox=letterbox, rgb=rgb, mean=mean, std=std)
    rng = np.random.default_rng(3)
    # landscape, portrait (pillarbox: a strided region), the input size, then back to landscape
    for h, w in [(480, 640), (640, 360), (96, 128), (300, 1000), (480, 640)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        tensor, _ = pre(image)
        expected = _reference(
            image, shape, np.dtype(dtype), quant, letterbox=letterbox, rgb=rgb, mean=mean, std=std
        )
        assert tensor.dtype == expected.dtype and tensor.shape == expected.shape
        if dtype == np.float32:
            np.testing.assert_allclose(tensor, expected, rtol=1e-6)
        else:
            assert np.array_equal(tensor, expected), (h, w)


def test_one_frame_sized_buffer_per_model() -> None:
    pre = Preprocessor((1, 640, 640, 3), np.dtype(np.int8), (1 / 255, -128), letterbox=True, rgb=True, mean=[0.0], std=[255.0])  # fmt: skip
    buffers = [v for v in vars(pre).values() if isinstance(v, np.ndarray) and v.nbytes >= 640 * 640 * 3]
    assert len(buffers) == 1
