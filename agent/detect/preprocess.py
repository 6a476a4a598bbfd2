"""From a BGR frame to the model's input tensor, and from input pixels back to the frame.

Two resize modes: ``stretch`` (plain resize to the input size, what SSD exports expect)
and ``letterbox`` (keep the aspect ratio and pad with grey 114, exactly as Ultralytics
does it, so YOLO results match theirs). Pixel values then become the input dtype:
uint8 inputs take raw pixels unless the card gives a normalisation; int8/uint8 inputs with
a normalisation go through a 256-entry lookup table built from the tensor's own scale and
zero point; float inputs are normalised as ``(pixel - mean) / std``. Buffers are reused
from frame to frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.boxes import FloatArray, as_boxes

PAD_VALUE = 114


@dataclass(frozen=True, slots=True)
class InputTransform:
    """How a frame maps into the model input: ``input = original * gain + pad`` per axis."""

    gain_x: float
    gain_y: float
    pad_x: float
    pad_y: float
    width: int  # original frame size in pixels
    height: int

    def to_original(self, xyxy_input: FloatArray) -> FloatArray:
        """Corner boxes in model-input pixels to corner boxes in original-frame pixels."""
        b = as_boxes(xyxy_input)
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float32)
        gain = np.array([self.gain_x, self.gain_y, self.gain_x, self.gain_y], dtype=np.float32)
        return (b - offset) / gain


def letterbox_geometry(width: int, height: int, in_w: int, in_h: int) -> tuple[int, int, int, int, int, int]:
    """Ultralytics' letterbox: resized size and padding for a ``width`` x ``height`` frame.

    Returns ``(new_w, new_h, top, bottom, left, right)`` in pixels. Python's ``round``
    (half to even) is deliberate: it is what Ultralytics uses.
    """
    r = min(in_h / height, in_w / width)
    new_w, new_h = round(width * r), round(height * r)
    dw, dh = (in_w - new_w) / 2, (in_h - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return new_w, new_h, top, bottom, left, right


def quantization_lut(mean: NDArray[np.float64], std: NDArray[np.float64], scale: float, zero_point: int, dtype: np.dtype) -> NDArray[np.uint8]:  # fmt: skip
    """Per-channel table ``[3, 256]`` mapping a pixel value to the quantised input, stored as
    uint8 bit patterns (an int8 value ``v`` is stored as ``v & 0xFF``)."""
    info = np.iinfo(dtype)
    pixels = np.arange(256, dtype=np.float64)[None, :]
    normalized = (pixels - mean[:, None]) / std[:, None]
    q = np.clip(np.round(normalized / scale) + zero_point, info.min, info.max).astype(np.int64)
    return (q & 0xFF).astype(np.uint8)


def _into(target: NDArray[np.uint8], result: NDArray[Any]) -> None:
    """Copy an OpenCV result into ``target`` when OpenCV allocated instead of writing there (a
    layout or dtype it does not write into in place)."""
    if result is not target:
        target[:] = result


def _pure_offset(lut: NDArray[np.uint8]) -> np.uint8 | None:
    """``k`` when every channel's table maps ``p`` to ``(p + k) mod 256`` (no clipping), else None."""
    k = int(lut[0, 0])
    expected = ((np.arange(256) + k) & 0xFF).astype(np.uint8)
    return np.uint8(k) if all(np.array_equal(row, expected) for row in lut) else None


class Preprocessor:
    """Turns BGR frames into input tensors for one model; not thread-safe (one per detector)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int, int],
        input_dtype: np.dtype,
        quantization: tuple[float, int],
        *,
        letterbox: bool,
        rgb: bool,
        mean: list[float] | None,
        std: list[float] | None,
    ) -> None:
        _, self.in_h, self.in_w, channels = input_shape
        if channels != 3:
            hint = (
                " (it looks channels-first, [1, 3, H, W]: export the model with channels last, NHWC, "
                "as TFLite models normally are)"
                if input_shape[1] == 3
                else ""
            )
            raise ValueError(
                f"model input {list(input_shape)} has {channels} channels; only 3-channel colour input "
                f"[1, H, W, 3] is supported{hint}"
            )
        self.dtype = np.dtype(input_dtype)
        self.letterbox = letterbox
        self.rgb = rgb
        # one frame-sized buffer: the resized frame is turned to RGB and quantised in place (the
        # padding already holds its final value), so a 640x640 model needs 1.2 MB, not 3.6
        self._canvas = np.full((self.in_h, self.in_w, 3), PAD_VALUE, dtype=np.uint8)
        self._pad = np.full(3, PAD_VALUE, dtype=np.uint8)  # the padding as it ends up in the canvas
        self._geometry: tuple[int, int, InputTransform, tuple[int, int, int, int]] | None = None
        self._lut: NDArray[np.uint8] | None = None
        self._lut_offset: np.uint8 | None = None
        self._mean = np.asarray(mean if mean is not None else [0.0], dtype=np.float64).reshape(-1)
        self._std = np.asarray(std if std is not None else [255.0], dtype=np.float64).reshape(-1)
        self._mean = np.broadcast_to(self._mean, (3,)).copy()
        self._std = np.broadcast_to(self._std, (3,)).copy()
        scale, zero_point = quantization
        self._float = (
            np.empty((self.in_h, self.in_w, 3), dtype=np.float32) if self.dtype == np.float32 else None
        )
        if self.dtype in (np.uint8, np.int8) and (mean is not None or self.dtype == np.int8):
            if not scale:
                raise ValueError("quantised model input without a scale")
            self._lut = quantization_lut(self._mean, self._std, scale, zero_point, self.dtype)
            self._lut_offset = _pure_offset(self._lut)
            self._pad = self._lut[:, PAD_VALUE].copy()  # channel c of the input is table c
            self._canvas[:] = self._pad
            # cv2.LUT wants one table for all channels ([256]) or one per channel ([1, 256, 3])
            same = bool((self._lut == self._lut[0]).all())
            self._cv_lut = (
                self._lut[0].copy() if same else np.ascontiguousarray(self._lut.T).reshape(1, 256, 3)
            )
        elif self.dtype not in (np.uint8, np.float32):
            raise ValueError(f"model input type {self.dtype} is not supported (uint8, int8 or float32)")

    def _transform_for(self, width: int, height: int) -> tuple[InputTransform, tuple[int, int, int, int]]:
        cached = self._geometry
        if cached is not None and cached[0] == width and cached[1] == height:
            return cached[2], cached[3]
        if self.letterbox:
            new_w, new_h, top, _, left, _ = letterbox_geometry(width, height, self.in_w, self.in_h)
            transform = InputTransform(new_w / width, new_h / height, left, top, width, height)
            region = (top, left, new_h, new_w)
            self._canvas[:] = self._pad
        else:
            transform = InputTransform(self.in_w / width, self.in_h / height, 0.0, 0.0, width, height)
            region = (0, 0, self.in_h, self.in_w)
        self._geometry = (width, height, transform, region)
        return transform, region

    def __call__(self, image: NDArray[np.uint8]) -> tuple[NDArray[np.generic], InputTransform]:
        """The input tensor ``[1, H, W, 3]`` for a BGR frame, and how to map boxes back.

        The returned array is a reused buffer: copy it if you keep it past the next call.
        """
        height, width = image.shape[:2]
        transform, (top, left, new_h, new_w) = self._transform_for(width, height)
        target = self._canvas[top : top + new_h, left : left + new_w]
        if (new_w, new_h) == (width, height):
            target[:] = image
        else:
            # straight into the canvas (a strided view is fine): no temporary frame-sized array
            _into(target, cv2.resize(image, (new_w, new_h), dst=target, interpolation=cv2.INTER_LINEAR))
        if self.rgb:  # in place, on the frame's part only: the grey padding reads the same either way
            _into(target, cv2.cvtColor(target, cv2.COLOR_BGR2RGB, dst=target))
        out: NDArray[np.generic] = self._canvas
        if self._lut is not None:
            if self._lut_offset is not None:
                np.add(target, self._lut_offset, out=target)
            else:
                _into(target, cv2.LUT(target, self._cv_lut, dst=target))
            out = self._canvas.view(self.dtype)
        elif self._float is not None:
            np.subtract(self._canvas, self._mean.astype(np.float32), out=self._float)
            np.divide(self._float, self._std.astype(np.float32), out=self._float)
            out = self._float
        return out[None], transform
