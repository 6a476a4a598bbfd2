"""Bare measurements beside the agent: back-to-back ``invoke()`` (the limit, and the agent's own
interpreters x threads), the folder source's JPEG decode, and YOLOv8n decode + NMS alone.
"""

from __future__ import annotations

import gc
import resource
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchlib import agent_seam
from benchlib.checks import TARGET_DECODE_NMS_MS
from benchlib.workload import read_bgr


def summarize_ms(values: Sequence[float]) -> dict[str, Any]:
    """``n``, ``median_ms``, ``p95_ms``, ``mean_ms``, ``min_ms``, ``max_ms`` of durations in ms
    (None figures when there are no values)."""
    if not values:
        return {"n": 0, "median_ms": None, "p95_ms": None, "mean_ms": None, "min_ms": None, "max_ms": None}
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": int(a.size),
        "median_ms": round(float(np.median(a)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "mean_ms": round(float(a.mean()), 3),
        "min_ms": round(float(a.min()), 3),
        "max_ms": round(float(a.max()), 3),
    }


# ----------------------------------------------------------------------------------------- the limit


def measure_invoke(
    model: Path,
    runtime: str,
    threads: int,
    frame: NDArray[np.uint8],
    seconds: float,
    max_invokes: int = 1000,
    interpreters: int = 1,
) -> dict[str, Any]:
    """Back-to-back ``invoke()`` on the model's input for ``frame`` (preprocessed once): median and
    p95 ms per call, and calls per second over the whole loop (``rate_fps``). With ``interpreters``
    > 1, that many interpreters invoke at once, each on its own thread (the agent's parallel mode),
    and the rate is their sum. ``runtime`` may be ``auto``: the result names the one it chose."""
    detectors = [agent_seam.open_detector(model, runtime, threads) for _ in range(interpreters)]
    for detector in detectors:
        tensor, _ = detector.preprocess(frame)
        detector.interpreter.set_tensor(detector._input["index"], tensor.copy())
        detector.interpreter.invoke()  # one more warm-up beyond the detector's own
    times: list[list[float]] = [[] for _ in detectors]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    deadline = start + seconds
    per_interpreter = max(5, max_invokes // interpreters)

    def loop(i: int) -> None:
        interpreter, mine = detectors[i].interpreter, times[i]
        while len(mine) < per_interpreter and (len(mine) < 5 or time.perf_counter() < deadline):
            t0 = time.perf_counter()
            interpreter.invoke()
            mine.append((time.perf_counter() - t0) * 1000.0)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(interpreters)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    total_s = time.perf_counter() - start
    usage_end = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = usage_end.ru_utime + usage_end.ru_stime - usage.ru_utime - usage.ru_stime
    labels = list(detectors[0].labels)
    runtime = str(detectors[0].runtime)
    detectors.clear()
    gc.collect()
    all_times = [t for mine in times for t in mine]
    summary = summarize_ms(all_times)
    return {
        "runtime": runtime,
        "threads": threads,
        "interpreters": interpreters,
        "invokes": len(all_times),
        "median_ms": summary["median_ms"],
        "p95_ms": summary["p95_ms"],
        "rate_fps": round(len(all_times) / total_s, 2),
        "cpu_ms_per_invoke": round(cpu_s * 1000.0 / len(all_times), 2),
        "labels": labels,
    }


def installed_runtimes(wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """(installed, missing) among ``wanted``."""
    have = set(agent_seam.installed_runtimes())
    return [r for r in wanted if r in have], [r for r in wanted if r not in have]


# ----------------------------------------------------------------------------------------- decode + NMS


def measure_decode(files: Sequence[Path], model: Path, limit: int = 200) -> dict[str, Any]:
    """JPEG decode as the folder source does it for ``model`` (at reduced size when the model's
    input allows), per file."""
    decode = agent_seam.reduced_decoder(agent_seam.open_detector(model, threads=1, warm_up=False))
    datas = [p.read_bytes() for p in files[:limit]]
    times = []
    reduced = 0
    for data in datas:
        t0 = time.perf_counter()
        decoded = decode(data)
        times.append((time.perf_counter() - t0) * 1000.0)
        reduced += decoded is not None and decoded[1] is not None
    return {**summarize_ms(times), "reduced": reduced == len(datas)}


def measure_yolo_decode_nms(model: Path, image: Path, repeats: int = 300) -> dict[str, Any]:
    """Decode + NMS of a real YOLOv8n output (captured once from ``image``): ``decode_yolo`` + ``nms``
    alone, and the detector's whole postprocess (filter, NMS, box mapping, ``Detections``)."""
    detector = agent_seam.open_detector(model)
    frame = read_bgr(image)
    if frame is None:
        raise RuntimeError(f"cannot read {image}")
    tensor, transform = detector.preprocess(frame)
    raw = [r.copy() for r in detector.invoke(tensor)]
    p = detector.params
    output = detector.outputs[0]
    decode_nms = agent_seam.yolo_decode_and_nms(detector)

    def decode_and_nms() -> int:
        return decode_nms(raw[0])

    def timed(fn: Callable[[], Any]) -> list[float]:
        for _ in range(10):
            fn()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1000.0)
        return out

    candidates = agent_seam.yolo_candidates(detector, raw[0])
    kept = decode_and_nms()
    alone = summarize_ms(timed(decode_and_nms))
    whole = summarize_ms(timed(lambda: detector.decode(raw, transform)))
    return {
        "model": model.name,
        "image": image.name,
        "output_shape": list(output.shape),
        "output_dtype": str(output.dtype),
        "score_threshold": p.score_threshold,
        "iou_threshold": p.iou_threshold,
        "candidates": candidates,
        "kept": kept,
        "decode_nms": alone,
        "postprocess_total": whole,
        "target_median_ms": TARGET_DECODE_NMS_MS,
        "ok": bool(alone["median_ms"] is not None and alone["median_ms"] < TARGET_DECODE_NMS_MS),
    }
