"""The detector: a model, a runtime, preprocessing, decoding and NMS behind one call.

``Detector(settings).detect(bgr_image)`` returns ``Detections`` in original-frame pixels.
Everything that can be wrong with a model (not a detector, unknown layout, labels that
do not match its classes, an Edge TPU model without the TPU) fails in the constructor,
which also runs one warm-up inference, so a broken model stops the agent at start-up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.boxes import denormalize_xyxy
from agent.config.detector import DetectorSettings
from agent.detect.layouts import (
    Candidates,
    Layout,
    OutputTensor,
    decode_end2end,
    decode_ssd,
    decode_yolo,
    detect_layout,
)
from agent.detect.model import ModelSpec, resolve_model
from agent.detect.model_store import configured_model
from agent.detect.nms import nms
from agent.detect.preprocess import InputTransform, Preprocessor
from agent.detect.runtime import make_interpreter
from agent.detect.tflite_file import SSD_POSTPROCESS_OP
from agent.detections import Detections
from agent.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_SCORE_THRESHOLD = 0.25
DEFAULT_IOU_THRESHOLD = 0.45
DEFAULT_MAX_DETECTIONS = 100


@dataclass(frozen=True, slots=True)
class DetectionParams:
    """The thresholds in force, after settings, card and defaults are merged."""

    score_threshold: float
    iou_threshold: float
    max_detections: int
    class_agnostic: bool


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


class Detector:
    """One model on one interpreter. Not thread-safe: use it from one thread."""

    def __init__(self, settings: DetectorSettings, *, warm_up: bool = True) -> None:
        self.settings = settings
        self.fallback_reason: str | None = None  # set when this is the fallback model
        self.known_answer: dict[str, Any] | None = None  # the start-up known-answer check's summary
        self.spec: ModelSpec = resolve_model(configured_model(settings), settings.labels)
        card = self.spec.card
        self.interpreter, self.runtime = make_interpreter(
            str(self.spec.path),
            self.spec.file_info,
            runtime=settings.runtime,
            num_threads=settings.num_threads,
            edgetpu=settings.edgetpu,
        )
        input_details = self.interpreter.get_input_details()
        if len(input_details) != 1 or len(input_details[0]["shape"]) != 4:
            shapes = [list(d["shape"]) for d in input_details]
            raise UserError(
                f"{self.spec.path} takes inputs {shapes}; a detector takes one image [1, H, W, 3]"
            )
        self._input = input_details[0]
        self.outputs = [OutputTensor.from_details(d) for d in self.interpreter.get_output_details()]
        forced = settings.layout if settings.layout != "auto" else card.layout
        labels = self.spec.labels
        pp = self.spec.file_info.postprocess_options or {}
        self.layout: Layout = detect_layout(
            self.outputs,
            forced=forced,
            has_postprocess_op=SSD_POSTPROCESS_OP in self.spec.file_info.custom_ops,
            num_labels=len(labels) if labels is not None else None,
            automl_order=self.spec.ssd_output_order,
            postprocess_classes=int(pp["num_classes"]) if "num_classes" in pp else None,
            model_name=str(self.spec.path),
            input_hw=(int(self._input["shape"][1]), int(self._input["shape"][2])),
        )
        self.model_labels = self._check_labels(labels)
        self.labels = tuple(settings.label_map.get(name, name) for name in self.model_labels)
        self.params = DetectionParams(
            score_threshold=_first(settings.score_threshold, card.score_threshold, DEFAULT_SCORE_THRESHOLD),
            iou_threshold=_first(settings.iou_threshold, card.iou_threshold, DEFAULT_IOU_THRESHOLD),
            max_detections=_first(settings.max_detections, card.max_detections, DEFAULT_MAX_DETECTIONS),
            class_agnostic=bool(_first(settings.class_agnostic_nms, card.class_agnostic_nms, False)),
        )
        self._class_filter = self._class_mask(settings.classes)
        self._class_thresholds = self._threshold_table(settings.class_thresholds)
        self.preprocess = self._preprocessor()
        self.input_height, self.input_width = self.preprocess.in_h, self.preprocess.in_w
        if warm_up:
            self._warm_up()

    def _preprocessor(self) -> Preprocessor:
        """The input pipeline the model card and the input tensor call for: letterbox for YOLO,
        stretch for SSD, pixel normalisation (YOLO 0..1, SSD -1..1) for float inputs."""
        family = self.layout.family
        fmt = self.spec.card.input
        letterbox = fmt.resize == "letterbox" or (fmt.resize == "auto" and family == "yolo")
        default_mean, default_std = ([0.0], [255.0]) if family == "yolo" else ([127.5], [127.5])
        mean, std = _as_list(fmt.mean), _as_list(fmt.std)
        dtype = np.dtype(self._input["dtype"])
        if not (mean is None and std is None and dtype == np.uint8):
            mean = mean if mean is not None else default_mean
            std = std if std is not None else default_std
        scale, zero_point = self._input.get("quantization", (0.0, 0))
        try:
            return Preprocessor(
                tuple(int(d) for d in self._input["shape"]),  # type: ignore[arg-type]
                dtype,
                (float(scale), int(zero_point)),
                letterbox=letterbox,
                rgb=fmt.color_order == "rgb",
                mean=mean,
                std=std,
            )
        except ValueError as exc:
            raise UserError(f"{self.spec.path}: {exc}") from None

    @property
    def name(self) -> str:
        """The model's name (card ``name`` or file stem)."""
        return self.spec.name

    @property
    def demo_notice(self) -> str | None:
        """A warning naming the bundled DEMO model and the command that fetches the real one;
        None for any other model."""
        from agent.detect.catalog import demo_notice

        return demo_notice(self.spec.path)

    @property
    def display_name(self) -> str:
        """The name for logs: the DEMO model says so, with the command that fetches the real one."""
        notice = self.demo_notice
        return f"{self.name} [{notice}]" if notice else self.name

    def describe(self) -> dict[str, Any]:
        """What runs where, for the stats message: model, runtime, Edge TPU device, fallback reason."""
        return {
            "model": self.name,
            "runtime": self.runtime,
            "edgetpu": self.settings.edgetpu,
            "fallback": self.fallback_reason,
            "known_answer": self.known_answer,
        }

    def _check_labels(self, labels: list[str] | None) -> tuple[str, ...]:
        classes = self.layout.num_classes
        if labels is None:
            if classes is None:
                return ()
            log.warning(
                "no labels found for %s; detections are named class_0..class_%d. Pass --labels or "
                "put labels in the model card",
                self.spec.path,
                classes - 1,
            )
            return tuple(f"class_{i}" for i in range(classes))
        if classes is not None and len(labels) != classes:
            raise UserError(
                f"{self.spec.path} has {classes} classes but the labels ({self.spec.labels_source}) "
                f"name {len(labels)}; use the labels file that belongs to this model"
                + (
                    " (for label maps whose first line is a background entry, set label_offset: 1 in the card)"
                    if abs(len(labels) - classes) == 1
                    else ""
                )
            )
        return tuple(labels)

    def _class_mask(self, keep: list[str] | None) -> NDArray[np.bool_] | None:
        if keep is None:
            return None
        unknown = sorted(set(keep) - set(self.labels))
        if unknown:
            raise UserError(
                f"detector.classes names {unknown} which the model does not detect; it knows {list(self.labels)}"
            )
        wanted = set(keep)
        return np.array([name in wanted for name in self.labels], dtype=bool)

    def _threshold_table(self, thresholds: dict[str, float]) -> NDArray[np.float32] | None:
        if not thresholds:
            return None
        unknown = sorted(set(thresholds) - set(self.labels))
        if unknown:
            raise UserError(
                f"detector.class_thresholds names {unknown}; the model's labels are {list(self.labels)}"
            )
        table = np.full(len(self.labels), self.params.score_threshold, dtype=np.float32)
        for i, name in enumerate(self.labels):
            if name in thresholds:
                table[i] = thresholds[name]
        return table

    def _warm_up(self) -> None:
        blank = np.zeros((self.input_height, self.input_width, 3), dtype=np.uint8)
        try:
            self.detect(blank)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(
                f"{self.spec.path} fails on its first inference with {self.runtime}: {exc}"
            ) from None

    def invoke(self, tensor: NDArray[Any]) -> list[NDArray[Any]]:
        """Run the model on an input tensor; returns the raw output arrays."""
        self.interpreter.set_tensor(self._input["index"], tensor)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(o.index) for o in self.outputs]

    def detect(self, image: NDArray[np.uint8], timings: dict[str, float] | None = None) -> Detections:
        """Detections for one BGR image, boxes in its pixels, best first.

        ``timings`` (when given) receives ``preprocess``, ``invoke`` and ``postprocess`` in ms.
        """
        t0 = time.perf_counter()
        tensor, transform = self.preprocess(image)
        t1 = time.perf_counter()
        raw = self.invoke(tensor)
        t2 = time.perf_counter()
        detections = self.decode(raw, transform)
        t3 = time.perf_counter()
        if timings is not None:
            timings["preprocess"] = (t1 - t0) * 1000.0
            timings["invoke"] = (t2 - t1) * 1000.0
            timings["postprocess"] = (t3 - t2) * 1000.0
        return detections

    def decode(
        self, raw: list[NDArray[Any]], transform: InputTransform, params: DetectionParams | None = None
    ) -> Detections:
        """Raw outputs to filtered, NMS-ed detections in original-frame pixels, best first, at most
        ``max_detections`` of them: the limit cuts what NMS kept (and the class filters left).
        ``params`` replaces the configured thresholds and drops the class filters (the known-answer
        check's own decode)."""
        p = params or self.params
        keep_class = self._filter if params is None else _all_candidates
        low = (
            float(self._class_thresholds.min())
            if params is None and self._class_thresholds is not None
            else p.score_threshold
        )
        if self.layout.family == "ssd":
            cand = keep_class(decode_ssd(raw, self.outputs, self.layout, low))  # NMS ran in the graph
            keep = np.argsort(-cand.score, kind="stable")
        elif self.layout.kind == "yolo_end2end":
            cand = keep_class(decode_end2end(raw[0], self.outputs[0], low))  # one box per object
            keep = np.argsort(-cand.score, kind="stable")
        else:
            cand = keep_class(decode_yolo(raw[0], self.outputs[0], self.layout, low))
            keep = nms(
                cand.xyxy,
                cand.score,
                cand.class_id,
                iou_threshold=p.iou_threshold,
                class_agnostic=p.class_agnostic,
            )
        keep = keep[: p.max_detections]
        xyxy = cand.xyxy[keep]
        if cand.normalized:
            xyxy = denormalize_xyxy(xyxy, self.input_width, self.input_height)
        xyxy = transform.to_original(xyxy)
        result = Detections.create(xyxy, cand.score[keep], cand.class_id[keep], self.labels)
        return result.clipped(transform.width, transform.height).sorted_by_score()

    def _filter(self, cand: Candidates) -> Candidates:
        """The candidates of known labels that pass the class filter and per-class thresholds."""
        n_labels = len(self.labels)
        mask = (
            (cand.class_id >= 0) & (cand.class_id < n_labels) if n_labels else np.ones(len(cand.score), bool)
        )
        if self._class_filter is not None:
            mask &= self._class_filter[np.clip(cand.class_id, 0, max(n_labels - 1, 0))]
        if self._class_thresholds is not None:
            mask &= cand.score >= self._class_thresholds[np.clip(cand.class_id, 0, max(n_labels - 1, 0))]
        if mask.all():
            return cand
        return Candidates(cand.xyxy[mask], cand.score[mask], cand.class_id[mask], cand.normalized)


def _as_list(value: float | list[float] | None) -> list[float] | None:
    if value is None:
        return None
    return [float(value)] if isinstance(value, int | float) else [float(v) for v in value]


_warned: set[str] = set()


def open_detector(settings: DetectorSettings) -> Detector:
    """The configured detector. With ``fallback_model`` set, that model runs on the CPU instead
    when ``model`` names a catalog model that is not installed, or when the Edge TPU is missing or
    fails (logged, and reported by ``describe()``)."""
    from agent.detect.model_store import with_installed_model

    settings, not_installed = with_installed_model(settings)
    if not_installed and not_installed not in _warned:  # once, not once per interpreter
        _warned.add(not_installed)
        log.warning("%s", not_installed)
    try:
        detector = Detector(settings)
        detector.fallback_reason = not_installed
        return detector
    except UserError as exc:
        if not (settings.edgetpu and settings.fallback_model):
            raise
        reason = str(exc)
    log.warning(
        "Edge TPU %s unusable, running the CPU fallback model %s instead: %s",
        settings.edgetpu,
        settings.fallback_model,
        reason,
    )
    cpu = settings.model_copy(
        update={"model": settings.fallback_model, "edgetpu": None, "fallback_model": None}
    )
    detector = Detector(cpu)
    detector.fallback_reason = reason
    return detector


def _all_candidates(cand: Candidates) -> Candidates:
    return cand
