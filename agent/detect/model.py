"""A model is a ``.tflite`` file plus its card: labels, layout and input format.

The card (``model.yaml`` beside the model, or ``<model stem>.yaml``) holds what the file
cannot tell; see the README's "Model card" section. Anything the card leaves out is read
from the model (output shapes, embedded labels) or from the sidecars other tools ship
(``dict.txt``, ``tflite_metadata.json``, a labels file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from agent.bundled import BUNDLED_DATA
from agent.config.base import StrictModel
from agent.config.detector import Layout
from agent.config.loading import load_yaml_model
from agent.detect.labels import find_sidecar_labels, labels_from_embedded, read_label_file
from agent.detect.tflite_file import TfliteFileInfo, read_tflite_file
from agent.errors import ConfigError

ResizeMode = Literal["auto", "stretch", "letterbox"]


class InputFormat(StrictModel):
    """How pixels become the model's input tensor."""

    color_order: Literal["rgb", "bgr"] = "rgb"
    resize: ResizeMode = "auto"
    mean: float | list[float] | None = None
    std: float | list[float] | None = None


class ModelCard(StrictModel):
    """The ``model.yaml`` beside a model; every key optional."""

    name: str | None = None
    version: str | None = None
    description: str | None = None
    license: str | None = None
    source: str | None = None  # where the file was published (a URL pinned to a commit or release)
    layout: Layout = "auto"
    labels: list[str] | None = None
    labels_file: str | None = None
    label_offset: int | None = Field(default=None, ge=0, le=1)
    input: InputFormat = Field(default_factory=InputFormat)
    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    iou_threshold: float | None = Field(default=None, gt=0.0, le=1.0)
    max_detections: int | None = Field(default=None, ge=1, le=10000)
    class_agnostic_nms: bool | None = None
    metrics: dict[str, Any] | None = None


@dataclass
class ModelSpec:
    """Everything known about a model before its interpreter is built."""

    path: Path
    name: str
    card: ModelCard
    card_path: Path | None
    labels: list[str] | None
    labels_source: str
    file_info: TfliteFileInfo
    ssd_output_order: list[str] | None = None  # from AutoML tflite_metadata.json, when present


def find_card(model_path: Path) -> Path | None:
    """``<stem>.yaml`` beside the model, else ``model.yaml`` in its folder."""
    for candidate in (model_path.with_suffix(".yaml"), model_path.parent / "model.yaml"):
        if candidate.is_file():
            return candidate
    return None


def load_card(path: Path) -> ModelCard:
    """Parse and validate a model card; errors name the key and the line."""

    return load_yaml_model(path, ModelCard, what="model card")


def _automl_output_order(model_path: Path) -> list[str] | None:
    meta = model_path.parent / "tflite_metadata.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    order = data.get("outputTensorRepresentation") if isinstance(data, dict) else None
    return [str(x) for x in order] if isinstance(order, list) else None


def resolve_model(model: str | Path, labels: str | Path | None = None) -> ModelSpec:
    """Find a model's card, labels and file facts. ``labels`` (a file) overrides everything else.

    Label sources, first found wins: the ``labels`` argument, the card's ``labels`` or
    ``labels_file``, labels embedded in the model, a labels file beside the model.
    """
    path = Path(model).expanduser()
    bundled = BUNDLED_DATA
    if not path.is_file() and path.resolve().parent == bundled:
        raise ConfigError(
            f"the bundled guidance model ({path.name}) is not part of this build yet; pass a model with "
            "--model (e.g. Print Nanny's print3d model, see the README) or set detector.model"
        )
    if not path.is_file():
        raise ConfigError(
            f"model file {path} does not exist; set detector.model (or --model) to a .tflite file"
        )
    info = read_tflite_file(str(path))
    card_path = find_card(path)
    card = load_card(card_path) if card_path else ModelCard()
    found: tuple[list[str], int] | None = None
    source = "none"
    if labels is not None:
        found, source = read_label_file(Path(labels).expanduser()), str(labels)
    elif card.labels:
        found, source = (list(card.labels), 0), f"{card_path} labels"
    elif card.labels_file:
        assert card_path is not None
        file = (card_path.parent / card.labels_file).resolve()
        found, source = read_label_file(file), str(file)
    else:
        embedded = labels_from_embedded(info.embedded_files)
        if embedded:
            found, source = embedded, "embedded in the model"
        else:
            sidecar = find_sidecar_labels(path)
            if sidecar:
                found, source = read_label_file(sidecar), str(sidecar)
    label_list: list[str] | None = None
    if found is not None:
        lines, guessed_offset = found
        offset = guessed_offset if card.label_offset is None else card.label_offset
        label_list = lines[offset:]
    return ModelSpec(
        path=path,
        name=card.name or path.stem,
        card=card,
        card_path=card_path,
        labels=label_list,
        labels_source=source,
        file_info=info,
        ssd_output_order=_automl_output_order(path),
    )
