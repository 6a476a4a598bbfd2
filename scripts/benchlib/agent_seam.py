"""Every import of edge-agent's own modules the bench makes, in one place.

The bench drives the agent as a user does (a config, ``build_agent``, ``run``) and opens bare
interpreters the way the agent opens them. Keeping those imports here means a restructuring of
``agent/`` has one file of the bench to follow. Imports are inside the functions: the peer's
Python, which has no edge-agent, imports nothing of this module's.

What the bench reads or wraps of the agent's objects (attributes, not imports): ``Agent.pipeline``,
``.detector``, ``.run()``; ``Pipeline.source``, ``.gate``, ``.stages`` (wrapped by the CPU probes,
their interfaces unchanged); ``Pipeline._workers[i].detector``, ``._capture_q``, ``._result_q``
(private, bench only); ``Detector.preprocess`` / ``.invoke`` / ``.decode`` (wrapped per instance),
``.params``, ``.runtime``, ``.name``, ``.labels``; the ``HandledFrame`` given to ``on_result``
(``.result.timings_ms``, ``.result.detections`` (``xyxy``, ``score``, ``class_id``),
``.result.frame.name``, ``.stage_ms``, ``.outputs``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def validate_config(data: dict[str, Any]) -> Any:
    """The agent's typed config (``AgentConfig``) from plain data, validated as the CLI does."""
    from agent.config import AgentConfig

    return AgentConfig.model_validate(data)


def build_agent(config: Any, on_result: Callable[[Any], None] | None) -> Any:
    """A ready-to-run agent (``agent.app.build_agent``) with a per-result callback."""
    from agent.app import build_agent as build

    return build(config, on_result=on_result)


def kept(handled: Any) -> bool:
    """Whether the output stages kept a frame (``HandledFrame`` given to ``on_result``)."""
    from agent.harvest.decision import KeepDecision

    decision = handled.outputs.find(KeepDecision)
    return bool(decision is not None and decision.keep)


def default_failure_labels() -> tuple[str, ...]:
    """The labels the alerts watch by default: a model that knows them is a printer model."""
    return tuple(validate_config({}).alerts.failure_labels)


def agent_plan(config: dict[str, Any]) -> tuple[str, int, int]:
    """``(runtime setting, interpreters, threads per interpreter)`` the agent will use with
    ``config`` on this machine."""
    detector = validate_config(config).detector
    interpreters, threads = detector.parallelism()
    return str(detector.runtime), int(interpreters), int(threads)


def open_detector(
    model: Path, runtime: str = "auto", threads: int | None = None, *, warm_up: bool = True
) -> Any:
    """A detector (interpreter, preprocessing, decoding) opened as the agent opens it."""
    from agent.config.detector import DetectorSettings
    from agent.detect.detector import Detector

    settings = DetectorSettings(model=str(model), runtime=runtime, num_threads=threads)
    return Detector(settings, warm_up=warm_up)


def installed_runtimes() -> list[str]:
    """The TFLite runtimes that import here, fastest first."""
    from agent.detect.runtime import installed_runtimes as found

    return list(found())


def reduced_decoder(detector: Any) -> Callable[[bytes], Any]:
    """The folder source's JPEG decode for ``detector``'s input (reduced size when it allows):
    bytes -> ``(image, full size or None)`` or None."""
    from agent.sources.decode import DecodeHint, decode_for_detector

    hint = DecodeHint(detector.input_width, detector.input_height, either=detector.preprocess.letterbox)
    return lambda data: decode_for_detector(data, hint)


def yolo_decode_and_nms(detector: Any) -> Callable[[Any], int]:
    """YOLO head decode + NMS alone, with ``detector``'s parameters: raw output -> boxes kept."""
    from agent.detect.layouts import decode_yolo
    from agent.detect.nms import nms

    p = detector.params
    output = detector.outputs[0]

    def run(raw: Any) -> int:
        cand = decode_yolo(raw, output, detector.layout, p.score_threshold)
        keep = nms(
            cand.xyxy,
            cand.score,
            cand.class_id,
            iou_threshold=p.iou_threshold,
            class_agnostic=p.class_agnostic,
        )
        return len(keep[: p.max_detections])

    return run


def yolo_candidates(detector: Any, raw: Any) -> int:
    """How many anchors of a raw YOLO output pass the score threshold."""
    from agent.detect.layouts import decode_yolo

    return len(decode_yolo(raw, detector.outputs[0], detector.layout, detector.params.score_threshold).score)
