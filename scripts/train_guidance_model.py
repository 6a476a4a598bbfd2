"""Train the print-failure guidance detector and export it as a full-integer TFLite model.

Reads labelled frames (a VoTT project, a COCO / YOLO / Pascal VOC export, or the
``ground_truth.json`` of ``scripts/make_sample_data.py``), trains a small anchor-based
single-shot detector on the CPU with TensorFlow/Keras, and writes:

- ``<out>.tflite``: uint8 input ``[1, S, S, 3]`` (RGB, letterboxed, pixels / 255 quantised with
  the tensor's own parameters) and uint8 output ``[1, N, 5 + nc]`` in the YOLOv5 layout: per
  row cx, cy, w, h normalised to the input, objectness and class scores, all after the
  sigmoid; rows in grid order over strides 8, 16, 32 (3 anchors per cell). Only ops the Edge
  TPU compiler maps: CONV_2D, DEPTHWISE_CONV_2D, ADD, LOGISTIC, RESHAPE, CONCATENATION (and
  QUANTIZE at the uint8 edges);
- ``<out>.yaml``: the model card (labels, layout, input format, thresholds, held-out metrics);
- ``<out>_labels.txt``: one label per line.

At the end it runs the exported model through the agent's own detector on the held-out split
and prints mAP@0.5 and the AP of each class (``export.metrics.evaluate``).

TensorFlow is needed only here (the ``train`` extra: ``pip install tensorflow-cpu``); the
agent runs the result with ai-edge-litert or tflite-runtime.

Examples::

    python scripts/make_sample_data.py train /tmp/synth --count 6000 --seed 1 --workers 2
    python scripts/make_sample_data.py train /tmp/synth-val --count 400 --seed 2
    python scripts/train_guidance_model.py --data /tmp/synth --val /tmp/synth-val \\
        --out agent/data/print3d_guidance.tflite
    python scripts/train_guidance_model.py --data ~/vott-target --source-folder ~/frames \\
        --out my_model.tflite   # labels reviewed in VoTT
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # run from a checkout without installing the package

from agent.detect.preprocess import PAD_VALUE, letterbox_geometry  # noqa: E402
from agent.errors import ConfigError, UserError  # noqa: E402

log = logging.getLogger("train_guidance_model")

DEFAULT_LABELS = ("nozzle", "raft", "print", "adhesion", "spaghetti")
STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 3
ANCHOR_RATIO_LIMIT = 4.0  # a box trains an anchor when its sides are within 4x of the anchor's
EDGETPU_OPS = frozenset(
    {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "ADD",
        "CONCATENATION",
        "RESHAPE",
        "LOGISTIC",
        "MAX_POOL_2D",
        "AVERAGE_POOL_2D",
        "QUANTIZE",
    }
)
LEVEL_BALANCE = (4.0, 1.0, 0.4)  # objectness loss weight per stride, as YOLOv5
LOSS_WEIGHTS = {"box": 0.05, "obj": 0.16, "cls": 0.1}


# ----------------------------------------------------------------------------------- data


@dataclass
class Sample:
    """One labelled image: ``xyxy`` float32 ``[N, 4]`` pixels and class ids ``[N]``."""

    name: str
    path: Path
    width: int
    height: int
    xyxy: np.ndarray
    classes: np.ndarray


def _truth_samples(path: Path, labels: list[str]) -> list[Sample]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    samples = []
    for frame in doc["frames"]:
        boxes = frame.get("boxes", [])
        unknown = {b["label"] for b in boxes} - set(labels)
        if unknown:
            raise ConfigError(f"{path}: labels {sorted(unknown)} are not in --labels {labels}")
        samples.append(
            Sample(
                name=frame["image"],
                path=path.parent / frame["image"],
                width=int(frame["width"]),
                height=int(frame["height"]),
                xyxy=np.array([b["xyxy"] for b in boxes], dtype=np.float32).reshape(-1, 4),
                classes=np.array([labels.index(b["label"]) for b in boxes], dtype=np.int32),
            )
        )
    return samples


def _dataset_of(source: Path, source_folder: Path | None = None) -> Any:
    """A ``LabeledDataset`` from a VoTT project (its images under ``source_folder`` when given:
    needed once VoTT has saved the project, as it encrypts its folder paths) or a COCO / YOLO /
    VOC export."""
    from export.coco import read_coco
    from export.dataset import from_vott
    from export.voc import read_voc
    from export.yolo import read_yolo

    if source.is_file():
        return read_coco(source)
    if any(source.glob("*.vott")):
        from agent.vott import load_project

        return from_vott(load_project(source, source_folder))
    if (source / "data.yaml").is_file() or any(source.glob("*.yaml")):
        return read_yolo(source)
    if (source / "Annotations").is_dir():
        return read_voc(source)
    return read_coco(source)


def source_labels(source: Path, source_folder: Path | None = None) -> list[str]:
    """The class names a data source declares, in its order."""
    truth = source if source.is_file() and source.suffix == ".json" else source / "ground_truth.json"
    if truth.is_file():
        doc = json.loads(truth.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "frames" in doc:
            return [str(x) for x in doc.get("labels", DEFAULT_LABELS)]
    return list(_dataset_of(source, source_folder).classes)


def load_samples(source: Path, labels: list[str], source_folder: Path | None = None) -> list[Sample]:
    """Labelled images of one data source (see the module docstring for the formats); a VoTT
    project's images under ``source_folder`` when given."""
    if not source.exists():
        raise ConfigError(f"training data {source} does not exist; pass a VoTT target folder or an export")
    truth = source if source.is_file() and source.suffix == ".json" else source / "ground_truth.json"
    if truth.is_file():
        doc = json.loads(truth.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "frames" in doc:
            return _truth_samples(truth, labels)
    dataset = _dataset_of(source, source_folder)
    samples = []
    for image in dataset.images:
        unknown = set(image.labels) - set(labels)
        if unknown:
            raise ConfigError(f"{source}: labels {sorted(unknown)} are not in --labels {labels}")
        if image.image_path is None:
            raise UserError(f"{source}: image {image.file_name} not found; pass the folder that holds it")
        samples.append(
            Sample(
                name=image.file_name,
                path=Path(image.image_path),
                width=image.width,
                height=image.height,
                xyxy=np.asarray(image.xyxy, dtype=np.float32).reshape(-1, 4),
                classes=np.array([labels.index(x) for x in image.labels], dtype=np.int32),
            )
        )
    return samples


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float, float]:
    """BGR image -> RGB ``size`` x ``size`` uint8 letterbox, exactly as the agent does it.

    Returns the image and ``gain_x, gain_y, pad_x, pad_y`` (input = original * gain + pad)."""
    h, w = image.shape[:2]
    new_w, new_h, top, _, left, _ = letterbox_geometry(w, h, size, size)
    out = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out[top : top + new_h, left : left + new_w] = resized[:, :, ::-1]
    return out, new_w / w, new_h / h, float(left), float(top)


@dataclass
class Prepared:
    """Images letterboxed to the model input and their boxes in input pixels."""

    images: np.ndarray  # [M, S, S, 3] uint8 RGB
    boxes: list[np.ndarray]  # per image [N, 4] xyxy input pixels
    classes: list[np.ndarray]


def prepare(samples: Sequence[Sample], size: int) -> Prepared:
    """Decode and letterbox every sample (kept in memory: 192 KB per image at 256 px)."""
    images = np.empty((len(samples), size, size, 3), dtype=np.uint8)
    boxes, classes = [], []
    for i, s in enumerate(samples):
        image = cv2.imread(str(s.path), cv2.IMREAD_COLOR)
        if image is None:
            raise UserError(f"cannot read image {s.path}; remove it from the data or replace it")
        images[i], gx, gy, px, py = letterbox(image, size)
        b = s.xyxy * np.array([gx, gy, gx, gy], dtype=np.float32) + np.array(
            [px, py, px, py], dtype=np.float32
        )
        keep = (b[:, 2] - b[:, 0] >= 1.0) & (b[:, 3] - b[:, 1] >= 1.0)
        boxes.append(b[keep])
        classes.append(s.classes[keep])
    return Prepared(images, boxes, classes)


def kmeans_anchors(boxes: list[np.ndarray], count: int, seed: int, size: int) -> np.ndarray:
    """``count`` anchor sizes (w, h input pixels) by k-means with 1 - IoU distance, by area."""
    wh = np.concatenate([b[:, 2:4] - b[:, 0:2] for b in boxes if len(b)] or [np.zeros((0, 2))])
    if len(wh) < count * 4:
        base = np.array(
            [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326]]
        )
        return (base * size / 640.0).astype(np.float32)[:count]
    rng = np.random.default_rng(seed)
    centers = wh[rng.choice(len(wh), count, replace=False)]
    for _ in range(60):
        inter = np.minimum(wh[:, None, 0], centers[None, :, 0]) * np.minimum(
            wh[:, None, 1], centers[None, :, 1]
        )
        iou = inter / (wh[:, None].prod(-1) + centers[None].prod(-1) - inter)
        nearest = iou.argmax(1)
        new = np.array(
            [
                np.median(wh[nearest == k], axis=0) if np.any(nearest == k) else centers[k]
                for k in range(count)
            ]
        )
        if np.allclose(new, centers):
            break
        centers = new
    return centers[np.argsort(centers.prod(1))].astype(np.float32)


def build_targets(
    boxes: Sequence[np.ndarray], classes: Sequence[np.ndarray], anchors: np.ndarray, size: int, nc: int
) -> list[np.ndarray]:
    """Dense training targets per stride: ``[B, G, G, A, 5 + nc]`` holding the assigned box
    (cx, cy, w, h normalised), a positive flag and the one-hot class.

    As YOLOv5: a box trains every anchor whose sides are within 4x of its own, at the cell of its
    centre and the two neighbouring cells nearest to the centre; smaller boxes win collisions.
    """
    batch = len(boxes)
    out = []
    all_b = np.concatenate([b for b in boxes] or [np.zeros((0, 4), np.float32)])
    all_c = np.concatenate([c for c in classes] or [np.zeros(0, np.int32)])
    img = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)] or [np.zeros(0, int)]).astype(int)
    cxy = (all_b[:, 0:2] + all_b[:, 2:4]) / 2.0
    wh = all_b[:, 2:4] - all_b[:, 0:2]
    order = np.argsort(-wh.prod(1))  # large first, so small boxes overwrite them
    for level, stride in enumerate(STRIDES):
        g = size // stride
        t = np.zeros((batch, g, g, ANCHORS_PER_CELL, 5 + nc), dtype=np.float32)
        anc = anchors[level * ANCHORS_PER_CELL : (level + 1) * ANCHORS_PER_CELL]
        for m in order:
            r = wh[m][None, :] / anc
            ok = np.nonzero(np.maximum(r, 1.0 / r).max(1) < ANCHOR_RATIO_LIMIT)[0]
            if not len(ok):
                continue
            gxy = cxy[m] / stride
            cell = np.minimum(np.floor(gxy).astype(int), g - 1)
            frac = gxy - cell
            cells = [cell]
            for axis in (0, 1):
                step = np.zeros(2, int)
                step[axis] = -1 if frac[axis] < 0.5 else 1
                nb = cell + step
                if 0 <= nb[axis] < g:
                    cells.append(nb)
            value = np.zeros(5 + nc, dtype=np.float32)
            value[0:2] = cxy[m] / size
            value[2:4] = wh[m] / size
            value[4] = 1.0
            value[5 + all_c[m]] = 1.0
            for c in cells:
                t[img[m], c[1], c[0], ok] = value
        out.append(t)
    return out


# ----------------------------------------------------------------------------------- model


def build_detector(size: int, nc: int, width: float) -> Any:
    """The trainable network: a small ResNet-style backbone with three single-conv heads.
    Outputs raw logits ``[B, G, G, A * (5 + nc)]`` for strides 8, 16 and 32."""
    import keras
    from keras import layers

    def ch(c: int) -> int:
        return max(8, round(c * width / 8) * 8)

    def cbr(x: Any, filters: int, k: int = 3, s: int = 1) -> Any:
        x = layers.Conv2D(filters, k, strides=s, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.97, epsilon=1e-3)(x)
        return layers.ReLU(6.0)(x)

    def res(x: Any, filters: int) -> Any:
        y = cbr(x, filters // 2, 1)
        y = cbr(y, filters, 3)
        return layers.Add()([x, y])

    def head(x: Any, filters: int) -> Any:
        y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        y = layers.BatchNormalization(momentum=0.97, epsilon=1e-3)(y)
        y = layers.ReLU(6.0)(y)
        y = cbr(y, filters, 1)
        prior = -math.log((1 - 0.01) / 0.01)  # objectness starts near 0.01
        bias = np.zeros(ANCHORS_PER_CELL * (5 + nc), dtype=np.float32)
        bias.reshape(ANCHORS_PER_CELL, 5 + nc)[:, 4] = prior
        bias.reshape(ANCHORS_PER_CELL, 5 + nc)[:, 5:] = -math.log((1 - 0.1) / 0.1)
        return layers.Conv2D(
            ANCHORS_PER_CELL * (5 + nc), 1, bias_initializer=keras.initializers.Constant(bias)
        )(y)

    inp = keras.Input((size, size, 3))
    x = cbr(inp, ch(16), 3, 2)
    x = cbr(x, ch(32), 3, 2)
    x = res(x, ch(32))
    x = cbr(x, ch(64), 3, 2)
    x = res(x, ch(64))
    p3 = res(x, ch(64))
    x = cbr(p3, ch(96), 3, 2)
    x = res(x, ch(96))
    p4 = res(x, ch(96))
    x = cbr(p4, ch(128), 3, 2)
    x = res(x, ch(128))
    p5 = res(x, ch(128))
    outs = [head(p3, ch(64)), head(p4, ch(96)), head(p5, ch(128))]
    return keras.Model(inp, outs, name="print3d_guidance")


def decode_params(anchors: np.ndarray, size: int, nc: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per stride, the in-graph decode after the sigmoid: ``out = sig * scale + bias + grid``.

    xy = (2 sig - 0.5 + cell) * stride / S, wh = 4 sig * anchor / S, scores = sig."""
    params = []
    c = 5 + nc
    for level, stride in enumerate(STRIDES):
        g = size // stride
        anc = anchors[level * ANCHORS_PER_CELL : (level + 1) * ANCHORS_PER_CELL]
        scale = np.ones((ANCHORS_PER_CELL, c), dtype=np.float32)
        bias = np.zeros((ANCHORS_PER_CELL, c), dtype=np.float32)
        scale[:, 0:2] = 2.0 * stride / size
        bias[:, 0:2] = -0.5 * stride / size
        scale[:, 2:4] = 4.0 * anc / size
        grid = np.zeros((1, g, g, ANCHORS_PER_CELL, c), dtype=np.float32)
        ys, xs = np.mgrid[0:g, 0:g].astype(np.float32)
        grid[0, :, :, :, 0] = (xs * stride / size)[:, :, None]
        grid[0, :, :, :, 1] = (ys * stride / size)[:, :, None]
        params.append((scale.reshape(-1), bias.reshape(-1), grid.reshape(1, g, g, ANCHORS_PER_CELL * c)))
    return params


def make_loss_fn(anchors: np.ndarray, size: int, nc: int) -> Any:
    """The YOLOv5-style loss: GIoU box loss and class BCE on assigned anchors, objectness BCE
    everywhere with the prediction's IoU as target."""
    import tensorflow as tf

    levels = []
    for level, (scale, bias, grid) in enumerate(decode_params(anchors, size, nc)):
        g = size // STRIDES[level]
        levels.append(
            (
                tf.constant(scale.reshape(ANCHORS_PER_CELL, 5 + nc)[:, :4]),
                tf.constant(bias.reshape(ANCHORS_PER_CELL, 5 + nc)[:, :4]),
                tf.constant(grid.reshape(1, g, g, ANCHORS_PER_CELL, 5 + nc)[..., :4]),
            )
        )

    def loss_fn(raws: list[Any], targets: list[Any]) -> tuple[Any, Any]:
        box_l, obj_l, cls_l = 0.0, 0.0, 0.0
        for level, (raw, t) in enumerate(zip(raws, targets, strict=True)):
            scale, bias, grid = levels[level]
            shape = tf.shape(raw)
            p = tf.reshape(raw, [shape[0], shape[1], shape[2], ANCHORS_PER_CELL, 5 + nc])
            box = tf.sigmoid(p[..., :4]) * scale + bias + grid  # cx, cy, w, h normalised
            mask = t[..., 4]
            n_pos = tf.maximum(tf.reduce_sum(mask), 1.0)
            giou = _giou(box, t[..., :4])
            box_l += tf.reduce_sum((1.0 - giou) * mask) / n_pos
            obj_target = mask * tf.stop_gradient(tf.clip_by_value(giou, 0.0, 1.0))
            obj = tf.nn.sigmoid_cross_entropy_with_logits(labels=obj_target, logits=p[..., 4])
            obj_l += LEVEL_BALANCE[level] * tf.reduce_mean(obj)
            cls = tf.nn.sigmoid_cross_entropy_with_logits(labels=t[..., 5:], logits=p[..., 5:])
            cls_l += tf.reduce_sum(tf.reduce_mean(cls, -1) * mask) / n_pos
        parts = tf.stack([box_l, obj_l, cls_l])
        total = LOSS_WEIGHTS["box"] * box_l + LOSS_WEIGHTS["obj"] * obj_l + LOSS_WEIGHTS["cls"] * cls_l
        return total, parts

    return loss_fn


def _giou(a: Any, b: Any) -> Any:
    """Generalised IoU of cx, cy, w, h boxes (last axis)."""
    import tensorflow as tf

    a1, a2 = a[..., 0:2] - a[..., 2:4] / 2, a[..., 0:2] + a[..., 2:4] / 2
    b1, b2 = b[..., 0:2] - b[..., 2:4] / 2, b[..., 0:2] + b[..., 2:4] / 2
    inter_wh = tf.maximum(tf.minimum(a2, b2) - tf.maximum(a1, b1), 0.0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter + 1e-9
    iou = inter / union
    hull_wh = tf.maximum(a2, b2) - tf.minimum(a1, b1)
    hull = hull_wh[..., 0] * hull_wh[..., 1] + 1e-9
    return iou - (hull - union) / hull


def export_graph(model: Any, anchors: np.ndarray, size: int, nc: int) -> Any:
    """The inference graph: the trained network plus the decode (sigmoid, a fixed 1x1
    depthwise conv for scale and offset, a constant grid added), reshaped to ``[1, N, 5+nc]``."""
    import keras
    from keras import layers

    class AddConstant(layers.Layer):  # type: ignore[misc]
        """Adds a fixed array (a graph constant, not a variable: the converter needs constants)."""

        def __init__(self, value: np.ndarray, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.value = value

        def call(self, x: Any) -> Any:
            return x + keras.ops.convert_to_tensor(self.value)

    inp = keras.Input((size, size, 3), batch_size=1)
    raws = model(inp, training=False)
    outs = []
    for (scale, bias, grid), raw, stride in zip(decode_params(anchors, size, nc), raws, STRIDES, strict=True):
        g = size // stride
        x = layers.Activation("sigmoid")(raw)
        affine = layers.DepthwiseConv2D(1, use_bias=True)
        x = affine(x)
        affine.set_weights([scale.reshape(1, 1, -1, 1), bias])
        x = AddConstant(grid)(x)
        outs.append(layers.Reshape((g * g * ANCHORS_PER_CELL, 5 + nc))(x))
    return keras.Model(inp, layers.Concatenate(axis=1)(outs))


def convert(graph: Any, calibration: np.ndarray, size: int) -> bytes:
    """Full-integer quantisation with uint8 input and output."""
    import tensorflow as tf

    def representative() -> Iterator[list[np.ndarray]]:
        for image in calibration:
            yield [image[None].astype(np.float32) / 255.0]
        yield [np.zeros((1, size, size, 3), np.float32)]
        yield [np.ones((1, size, size, 3), np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(graph)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return bytes(converter.convert())


def check_tflite(path: Path) -> list[str]:
    """The op names of a converted model; raises if one is not Edge TPU friendly or the I/O is not uint8."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    ops = sorted({d["op_name"] for d in interpreter._get_ops_details()})
    bad = [op for op in ops if op not in EDGETPU_OPS]
    if bad:
        raise RuntimeError(f"{path} uses ops the Edge TPU compiler does not map: {bad}")
    for d in interpreter.get_input_details() + interpreter.get_output_details():
        if d["dtype"] != np.uint8:
            raise RuntimeError(f"{path}: tensor {d['name']} is {d['dtype']}, expected uint8")
    return ops


# ----------------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """Hyper-parameters of one run."""

    size: int
    epochs: int
    batch: int
    lr: float
    width: float
    seed: int
    xla: bool
    ema: bool
    max_minutes: float
    init: Path | None = None  # weights of an earlier run to start from


def train(data: Prepared, nc: int, cfg: TrainConfig, anchors: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """Train the network; returns it and a summary (steps, minutes, final losses)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()  # same seed, same data -> same model
    model = build_detector(cfg.size, nc, cfg.width)
    if cfg.init is not None:
        model.load_weights(str(cfg.init))
        log.info("starting from the weights in %s", cfg.init)
    log.info(
        "model: %d parameters, input %d, anchors %s",
        model.count_params(),
        cfg.size,
        anchors.round(1).tolist(),
    )
    steps_per_epoch = max(1, len(data.images) // cfg.batch)
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, min(steps_per_epoch * 2, total // 5))
    optimizer = keras.optimizers.AdamW(
        learning_rate=cfg.lr,
        weight_decay=5e-4,
        use_ema=cfg.ema,
        ema_momentum=0.995,
        ema_overwrite_frequency=None,
    )
    loss_fn = make_loss_fn(anchors, cfg.size, nc)

    @tf.function(jit_compile=cfg.xla, reduce_retracing=True, autograph=False)
    def step(images: Any, t3: Any, t4: Any, t5: Any, lr: Any) -> Any:
        optimizer.learning_rate.assign(lr)
        x = tf.cast(images, tf.float32) / 255.0
        with tf.GradientTape() as tape:
            raws = model(x, training=True)
            loss, parts = loss_fn(raws, [t3, t4, t5])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return parts

    rng = np.random.default_rng(cfg.seed)
    start = time.monotonic()
    schedule = Schedule(cfg.lr, warmup, total, cfg.max_minutes * 60.0)
    done = 0
    parts_avg = np.zeros(3)
    lr = 0.0
    stopped = "epochs"
    stop = _StopRequest()
    try:
        for epoch in range(cfg.epochs):
            order = rng.permutation(len(data.images))
            for s in range(steps_per_epoch):
                lr, _ = schedule.at(done, time.monotonic() - start)
                if lr is None or stop.requested:
                    break
                idx = np.sort(order[s * cfg.batch : (s + 1) * cfg.batch])
                images, boxes = augment(data, idx, rng, cfg.size)
                targets = build_targets(boxes, [data.classes[i] for i in idx], anchors, cfg.size, nc)
                parts = step(images, *targets, np.float32(lr)).numpy()
                parts_avg = 0.95 * parts_avg + 0.05 * parts if done else parts
                done += 1
                if done == warmup:
                    schedule.warmup_ended(time.monotonic() - start)
                if done % 50 == 0:
                    rate = done * cfg.batch / (time.monotonic() - start)
                    log.info(
                        "step %d/%d: %.1f images/s, eta %.1f min",
                        done,
                        total,
                        rate,
                        (total - done) * cfg.batch / rate / 60,
                    )
            if done > epoch * steps_per_epoch:  # an epoch that ran at least one step
                elapsed = (time.monotonic() - start) / 60.0
                log.info(
                    "epoch %d/%d: loss box %.3f obj %.4f cls %.3f, lr %.5f, %.1f min",
                    epoch + 1, cfg.epochs, *parts_avg, lr or 0.0, elapsed,
                )  # fmt: skip
            if stop.requested:
                stopped = "interrupted"
                log.warning("stopped after %d steps: interrupted; writing the model as it is", done)
                break
            if done < (epoch + 1) * steps_per_epoch:
                stopped = "time budget"
                log.warning(
                    "stopped after %d of %d steps: --max-minutes %g reached", done, total, cfg.max_minutes
                )
                break
    finally:
        stop.restore()
    if cfg.ema:
        optimizer.finalize_variable_values(model.trainable_variables)
    summary = {
        "steps": done,
        "epochs_done": round(done / steps_per_epoch, 2),
        "train_minutes": round((time.monotonic() - start) / 60.0, 1),
        "stopped_by": stopped,  # epochs | time budget | interrupted
    }
    return model, summary


class Schedule:
    """The learning rate per step: a linear warm-up over ``warmup`` steps to ``base_lr``, then a
    cosine down to 2 % of it, over the remaining steps or the time budget (``budget_s`` seconds of
    training), whichever runs out first. Training ends when the cosine does."""

    def __init__(self, base_lr: float, warmup: int, total: int, budget_s: float) -> None:
        self.base_lr = base_lr
        self.warmup = warmup
        self.total = total
        self.budget_s = budget_s
        self.warmup_s = 0.0

    def warmup_ended(self, elapsed_s: float) -> None:
        """The warm-up's last step finished ``elapsed_s`` seconds after the start."""
        self.warmup_s = elapsed_s

    def at(self, step: int, elapsed_s: float) -> tuple[float | None, bool]:
        """The learning rate of ``step`` (0-based) started ``elapsed_s`` seconds after the start,
        or None when training is over; and whether time rather than steps set it."""
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup, False
        by_steps = (step - self.warmup) / max(1, self.total - self.warmup)
        left_s = self.budget_s - self.warmup_s
        # a budget the warm-up used up ends training right after it
        by_time = (elapsed_s - self.warmup_s) / left_s if left_s > 0 else math.inf
        progress = max(by_steps, by_time)
        if progress >= 1.0:
            return None, by_time > by_steps
        return self.base_lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))), by_time > by_steps


class _StopRequest:
    """Ctrl-C or SIGTERM during training: finish the step, then export what was learnt so far."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():  # Python delivers signals only there
            self._previous = {
                sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
            }

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stop requested: finishing this step, then writing the model (Ctrl-C again to abort)")

    def restore(self) -> None:
        """Put the earlier signal handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def augment(
    data: Prepared, idx: np.ndarray, rng: np.random.Generator, size: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """A batch with random horizontal flips and small brightness / contrast changes."""
    images = data.images[idx].copy()
    boxes = [data.boxes[i].copy() for i in idx]
    flip = rng.random(len(idx)) < 0.5
    images[flip] = images[flip, :, ::-1]
    for j in np.nonzero(flip)[0]:
        b = boxes[j]
        b[:, [0, 2]] = size - b[:, [2, 0]]
    jitter = rng.random(len(idx)) < 0.5
    if jitter.any():
        gain = rng.uniform(0.75, 1.25, (int(jitter.sum()), 1, 1, 1)).astype(np.float32)
        offset = rng.uniform(-20, 20, (int(jitter.sum()), 1, 1, 1)).astype(np.float32)
        images[jitter] = np.clip(images[jitter].astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
    return images, boxes


# ----------------------------------------------------------------------------------- evaluation


def evaluate_model(model_path: Path, samples: Sequence[Sample], labels: list[str]) -> Any:
    """Run the exported model with the agent's detector on ``samples``; the ``EvalReport``."""
    from agent.config.detector import DetectorSettings
    from agent.detect.detector import Detector
    from export.metrics import ImageBoxes, evaluate

    detector = Detector(DetectorSettings(model=str(model_path), score_threshold=0.01, max_detections=100))
    predictions, truths = [], []
    for s in samples:
        image = cv2.imread(str(s.path), cv2.IMREAD_COLOR)
        dets = detector.detect(image)
        predictions.append(ImageBoxes.create(s.name, dets.xyxy, dets.label_names(), dets.score))
        truths.append(ImageBoxes.create(s.name, s.xyxy, [labels[c] for c in s.classes]))
    return evaluate(predictions, truths, iou_threshold=0.5, classes=labels)


def _card_input_size(card_path: Path) -> int | None:
    """The input size an earlier run recorded in its model card (None when unknown)."""
    try:
        card = yaml.safe_load(card_path.read_text(encoding="utf-8"))
        return int(card["metrics"]["input_size"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


def write_card(path: Path, labels: list[str], description: str, metrics: dict[str, Any]) -> None:
    """The model card beside the model (format: the README's "Model card")."""
    from agent.fsutil import atomic_write_text

    card = {
        "name": "print3d-guidance",
        "version": datetime.datetime.now(datetime.UTC).strftime("%Y.%m.%d"),
        "description": description,
        "license": "Apache-2.0",
        "layout": "yolov5",
        "labels": labels,
        "input": {"color_order": "rgb", "resize": "letterbox", "mean": 0.0, "std": 255.0},
        "score_threshold": 0.25,
        "iou_threshold": 0.45,
        "max_detections": 100,
        "class_agnostic_nms": False,
        "metrics": metrics,
    }
    atomic_write_text(path, yaml.safe_dump(card, sort_keys=False, allow_unicode=True))


# ----------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        help="training data: VoTT target folder, COCO/YOLO/VOC export, or ground_truth.json (repeatable)",
    )
    p.add_argument(
        "--source-folder",
        type=Path,
        help="where the VoTT projects' frames are (VoTT's source connection folder), for every VoTT "
        "project among --data and --val; needed once VoTT has saved a project, as it encrypts its paths",
    )
    p.add_argument(
        "--val",
        type=Path,
        action="append",
        help="held-out data in the same formats (default: --val-fraction of --data)",
    )
    p.add_argument(
        "--val-fraction", type=float, default=0.1, help="share of --data held out when --val is absent"
    )
    p.add_argument("--out", type=Path, required=True, help="the .tflite to write (card and labels beside it)")
    p.add_argument("--labels", help="comma-separated class names in id order (default: the data's own)")
    p.add_argument(
        "--input-size", type=int, help="model input in pixels, a multiple of 32 (default 256; --quick: 128)"
    )
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier of the network")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--max-minutes",
        type=float,
        default=60.0,
        help="training time budget: the learning rate anneals to it if the epochs would take longer",
    )
    p.add_argument("--threads", type=int, default=0, help="TensorFlow CPU threads (0: all)")
    p.add_argument(
        "--no-xla",
        action="store_true",
        help="do not compile the training step with XLA (faster on some CPUs)",
    )
    p.add_argument(
        "--init",
        type=Path,
        help="start from the .weights.h5 an earlier run wrote beside its model (same --width; its anchors "
        "are read from the _anchors.npy beside it and scaled when --input-size differs from the card's)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a one-minute smoke run: 128 px input, 6 epochs, half width, no XLA, no EMA",
    )
    p.add_argument("--description", default="", help="model card description")
    p.add_argument("--min-map50", type=float, default=0.0, help="exit 1 when held-out mAP@0.5 is below this")
    args = p.parse_args(argv)  # fmt: skip
    if args.quick:
        args.epochs, args.width, args.batch = 6, 0.5, 8
    if args.input_size is None:
        args.input_size = 128 if args.quick else 256
    if args.input_size % 32:
        p.error("--input-size must be a multiple of 32")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Train, export, check and evaluate; returns the exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        print(
            "TensorFlow is not installed: pip install 'edge-agent[train]' (tensorflow-cpu)", file=sys.stderr
        )
        return 2
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    try:
        return run(args)
    except (UserError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


def run(args: argparse.Namespace) -> int:
    """The training run behind ``main``."""
    started = time.monotonic()
    labels = args.labels.split(",") if args.labels else source_labels(args.data[0], args.source_folder)
    samples = [s for src in args.data for s in load_samples(src, labels, args.source_folder)]
    if args.val:
        heldout = [s for src in args.val for s in load_samples(src, labels, args.source_folder)]
        train_samples = samples
    else:
        order = np.random.default_rng(args.seed).permutation(len(samples))
        n_val = max(1, round(len(samples) * args.val_fraction))
        heldout = [samples[i] for i in sorted(order[:n_val])]
        train_samples = [samples[i] for i in sorted(order[n_val:])]
    if not train_samples or not heldout:
        raise UserError("need at least one training and one held-out image; add data")
    log.info("%d training images, %d held out, labels %s", len(train_samples), len(heldout), labels)
    data = prepare(train_samples, args.input_size)
    if args.init is not None:
        anchors_file = args.init.with_name(args.init.name.replace(".weights.h5", "_anchors.npy"))
        if not args.init.is_file() or not anchors_file.is_file():
            raise UserError(f"--init needs {args.init} and {anchors_file} (written by an earlier run)")
        anchors = np.load(anchors_file)
        init_size = _card_input_size(args.init.with_name(args.init.name.replace(".weights.h5", ".yaml")))
        if init_size and init_size != args.input_size:
            # anchors are in input pixels: the same objects are bigger at a larger input
            anchors = (anchors * (args.input_size / init_size)).astype(np.float32)
            log.info(
                "anchors scaled from the %d px input of %s to %d px", init_size, args.init, args.input_size
            )
    else:
        anchors = kmeans_anchors(data.boxes, len(STRIDES) * ANCHORS_PER_CELL, args.seed, args.input_size)
    cfg = TrainConfig(
        size=args.input_size,
        epochs=args.epochs,
        batch=min(args.batch, len(train_samples)),
        lr=args.lr,
        width=args.width,
        seed=args.seed,
        xla=not (args.no_xla or args.quick),
        ema=not args.quick,
        max_minutes=args.max_minutes,
        init=args.init,
    )
    model, summary = train(data, len(labels), cfg, anchors)
    # the float weights and anchors, so that a later run can go on from here (--init)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(args.out.with_name(f"{args.out.stem}.weights.h5")))
    np.save(args.out.with_name(f"{args.out.stem}_anchors.npy"), anchors)
    graph = export_graph(model, anchors, args.input_size, len(labels))
    calib_idx = np.random.default_rng(args.seed).permutation(len(data.images))[:200]
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the whole exported signature
        tflite = convert(graph, data.images[calib_idx], args.input_size)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    from agent.fsutil import atomic_write_bytes, atomic_write_text

    atomic_write_bytes(out, tflite)
    atomic_write_text(out.with_name(f"{out.stem}_labels.txt"), "\n".join(labels) + "\n")
    # a provisional card so that the agent's detector reads the model during evaluation
    description = args.description or (
        f"3D-print guidance detector ({', '.join(labels)}) trained by scripts/train_guidance_model.py "
        f"on {len(train_samples)} images"
    )
    card_path = out.with_suffix(".yaml")
    write_card(card_path, labels, description, {})  # the detector reads the card during evaluation
    ops = check_tflite(out)
    report = evaluate_model(out, heldout, labels)
    metrics = {
        "map50": round(float(report.map50), 3),
        "map50_95": round(float(report.map50_95), 3),
        "ap50_per_class": {
            k: None if v is None else round(float(v), 3) for k, v in report.per_class_ap50.items()
        },
        "heldout_images": len(heldout),
        "train_images": len(train_samples),
        "input_size": args.input_size,
        "seed": args.seed,
        "started_from": args.init.name if args.init else None,
        **summary,
    }
    write_card(card_path, labels, description, metrics)
    total_min = (time.monotonic() - started) / 60.0
    print(f"model: {out} ({out.stat().st_size / 1e6:.2f} MB, ops {', '.join(ops)})")
    print(
        f"training: {summary['steps']} steps ({summary['epochs_done']} epochs) in {summary['train_minutes']} "
        f"min, ended by {summary['stopped_by']}; whole run {total_min:.1f} min"
    )
    print(
        f"held-out ({len(heldout)} images): mAP@0.5 = {report.map50:.3f}, mAP@0.5:0.95 = {report.map50_95:.3f}"
    )
    for label, ap in report.per_class_ap50.items():
        print(f"  AP@0.5 {label:<10} {'n/a' if ap is None else f'{ap:.3f}'}")
    if report.map50 < args.min_map50:
        print(f"mAP@0.5 {report.map50:.3f} is below --min-map50 {args.min_map50}", file=sys.stderr)
        return 1
    return 130 if summary["stopped_by"] == "interrupted" else 0  # the shell's code for Ctrl-C


if __name__ == "__main__":
    sys.exit(main())
