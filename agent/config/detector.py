"""The ``detector`` section of the configuration."""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from agent.config.base import StrictModel
from agent.errors import ConfigError

Layout = Literal["auto", "ssd_tf1", "ssd_tf2", "yolov5", "yolov8", "yolo_end2end"]
RuntimeName = Literal["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"]
EDGETPU_DEVICE = re.compile(r"^(usb|pci)(:\d+)?$")


def parse_edgetpu_device(value: str | None) -> str | None:
    """Validate an Edge TPU device string (``usb``, ``usb:N``, ``pci``, ``pci:N``)."""
    if value is None or value == "":
        return None
    if not EDGETPU_DEVICE.match(value):
        raise ConfigError(f"detector.edgetpu {value!r} must be usb, usb:N, pci or pci:N (N = 0, 1, ...)")
    return value


class DetectorSettings(StrictModel):
    """Which model runs where, and how its raw detections are filtered.

    Thresholds left unset come from the model card, then from the defaults (score 0.25,
    IoU 0.45, 100 detections).
    """

    model: str | None = Field(default=None, description="path to a .tflite model; unset: the bundled one")
    labels: str | None = Field(default=None, description="labels file overriding the model's own")
    runtime: RuntimeName = "auto"
    """TFLite runtime; auto picks the fastest installed (ai_edge_litert, then tflite_runtime, then tensorflow)."""
    num_threads: int | None = Field(default=None, ge=1, le=64)
    """Threads per interpreter; default the cores shared out among the interpreters."""
    edgetpu: str | None = Field(default=None, description="usb, usb:N, pci or pci:N")
    interpreters: int | None = Field(default=None, ge=1, le=16)
    """Interpreters working on successive frames in parallel (output order is kept); default 2
    on a CPU with 2+ cores (two 1-thread interpreters ran 1.06-1.22x the rate of the best single
    one on 2 cores, docs/performance.md), 1 on an Edge TPU (one device) or when num_threads is set."""
    fallback_model: str | None = Field(
        default=None,
        description="CPU model to run when the Edge TPU is missing or fails (reported in stats); unset: stop",
    )
    layout: Layout = "auto"
    """Output layout; auto detects it from the model (override in the model card)."""
    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Minimum score; default the model card's, else 0.25."""
    iou_threshold: float | None = Field(default=None, gt=0.0, le=1.0)
    """NMS IoU for YOLO models; default the card's, else 0.45."""
    max_detections: int | None = Field(default=None, ge=1, le=10000)
    """At most this many detections per frame; default the card's, else 100."""
    class_agnostic_nms: bool | None = None
    """NMS across classes (default per class)."""
    classes: list[str] | None = Field(default=None, description="keep only these labels (after label_map)")
    label_map: dict[str, str] = Field(default_factory=dict, description="model label -> dataset label")
    class_thresholds: dict[str, float] = Field(default_factory=dict, description="label -> score threshold")

    @field_validator("edgetpu")
    @classmethod
    def _check_edgetpu(cls, value: str | None) -> str | None:
        try:
            return parse_edgetpu_device(value)
        except Exception as exc:
            raise ValueError(str(exc)) from None

    @field_validator("interpreters")
    @classmethod
    def _one_interpreter_per_tpu(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and value > 1 and info.data.get("edgetpu"):
            raise ValueError(
                "an Edge TPU runs one interpreter; remove detector.interpreters (or set it to 1)"
            )
        return value

    @field_validator("class_thresholds")
    @classmethod
    def _check_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for label, threshold in value.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold for {label!r} must be between 0 and 1")
        return value

    def parallelism(self, cores: int | None = None) -> tuple[int, int]:
        """``(interpreters, threads per interpreter)`` for this machine (``cores``: default all)."""
        cores = cores or os.cpu_count() or 1
        interpreters = self.interpreters or (1 if self.edgetpu or self.num_threads or cores < 2 else 2)
        threads = self.num_threads or max(1, cores // interpreters)
        return interpreters, threads
