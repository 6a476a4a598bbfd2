#!/usr/bin/env python3
"""Make the known answers a model ships with: ``<model stem>.answers.json`` beside the model.

Runs the model on its known frame with one runtime on this machine and writes (or replaces) that
runtime's entry, keyed for every machine (``--machine any``, the default) or for this machine only
(``--machine this``: where the runtime's kernels legitimately differ between architectures). It then
compares the new answers with every other entry of the file, so you can see whether a separate entry
was needed. Format and rules: docs/known-answers.md.

    .venv/bin/python scripts/known_answers.py --model agent/data/print3d_guidance.tflite \\
        --runtime ai_edge_litert --why "the same on x86_64 and aarch64"
    .venv/bin/python scripts/known_answers.py --model agent/data/print3d_guidance.tflite \\
        --runtime tflite_runtime --machine this --why "its aarch64 kernels score differently"
    .venv/bin/python scripts/known_answers.py --model m.tflite --check     # compare, write nothing

The bundled model's entries for aarch64 are made inside the emulated Pi root of
scripts/arm64/check.py (``--shell``), since tflite-runtime's aarch64 kernels differ from x86_64's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.config.detector import DetectorSettings  # noqa: E402
from agent.detect.answer_compare import compare_answers  # noqa: E402
from agent.detect.detector import Detector  # noqa: E402
from agent.detect.known_answer import answers_now, make_entry  # noqa: E402
from agent.detect.known_answers_file import (  # noqa: E402
    BUNDLED,
    BUNDLED_DATA,
    DEFAULT_FRAME,
    SHIPPED_SUFFIX,
    DecodeSettings,
    FrameRef,
    KnownAnswers,
    ModelRef,
    frame_path,
    load_answers,
    save_answers,
    select_entry,
)
from agent.detect.platform_facts import platform_facts  # noqa: E402
from agent.fsutil import file_sha256  # noqa: E402

KEYS = ("runtime", "runtime_version", "delegate", "delegate_version", "machine")


def frame_reference(answers_file: Path, frame: Path) -> str:
    """How the answers file names ``frame``: relative to its folder, ``{bundled}/...`` for the agent's
    own data, else absolute (which only works on this machine)."""
    frame = frame.resolve()
    for base, prefix in ((answers_file.parent.resolve(), ""), (BUNDLED_DATA, f"{BUNDLED}/")):
        if frame.is_relative_to(base):
            return prefix + str(frame.relative_to(base))
    print(
        f"warning: {frame} is outside the model's folder: the file names it by absolute path", file=sys.stderr
    )
    return str(frame)


def starting_file(model: Path, answers_file: Path, frame: Path | None, fresh: bool) -> KnownAnswers:
    """The answers file to add to: the existing one (same model file), else a new one."""
    sha = file_sha256(model)
    if answers_file.is_file() and not fresh:
        answers = load_answers(answers_file)
        if answers.model.sha256 != sha:
            raise SystemExit(
                f"{answers_file} was made for another {model.name} (sha256 differs): "
                "pass --fresh to start it again"
            )
    else:
        default = FrameRef(path=DEFAULT_FRAME, sha256="0" * 64)
        answers = KnownAnswers(model=ModelRef(file=model.name, sha256=sha), frame=default)
        if frame is None:
            frame = frame_path(answers_file, default)
    if frame is not None:
        answers.frame = FrameRef(path=frame_reference(answers_file, frame), sha256=file_sha256(frame))
    return answers


def main(argv: list[str] | None = None) -> int:
    """Record (or with ``--check`` compare) one runtime's known answers for a model."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, type=Path, help="the .tflite model (its card beside it)")
    parser.add_argument("--runtime", default="auto", help="TFLite runtime to run (default: the fastest)")
    parser.add_argument("--edgetpu", help="run on this Edge TPU (usb, pci); the entry's delegate is edgetpu")
    parser.add_argument(
        "--frame", type=Path, help="the known frame (default: the file's, else the bundled one)"
    )
    parser.add_argument("--machine", choices=("any", "this"), default="any", help="key the entry by machine")
    parser.add_argument("--why", help="why this entry exists (kept in the file)")
    parser.add_argument("--threshold", type=float, help="decode score threshold (new files; default 0.05)")
    parser.add_argument("--fresh", action="store_true", help="start the file again (another model file)")
    parser.add_argument("--check", action="store_true", help="compare with the file's entry; write nothing")
    args = parser.parse_args(argv)

    model: Path = args.model
    answers_file = model.with_name(model.stem + SHIPPED_SUFFIX)
    answers = starting_file(model, answers_file, args.frame, args.fresh)
    if args.threshold is not None:
        answers.decode = DecodeSettings(score_threshold=args.threshold)
    settings = DetectorSettings(model=str(model), runtime=args.runtime, edgetpu=args.edgetpu, num_threads=1)
    detector = Detector(settings)
    platform = platform_facts(detector)
    image_path = frame_path(answers_file, answers.frame)
    import cv2

    got = answers_now(detector, cv2.imread(str(image_path), cv2.IMREAD_COLOR), answers.decode)
    print(f"{detector.name} on {platform.text()}, {image_path.name}:")
    for answer in got:
        print(f"  {answer.text()}")
    threshold = answers.decode.score_threshold
    if args.check:
        chosen = select_entry(answers, platform)
        if chosen is None:
            print("no entry of the file fits this platform")
            return 1
        comparison = compare_answers(chosen[0].detections, got, answers.tolerance, threshold)
        print(comparison.agreement() if comparison.ok else comparison.differences())
        return 0 if comparison.ok else 1
    entry = make_entry(platform, got, exact=False, why=args.why)
    if args.machine == "this":
        entry.machine = platform.machine
    for other in answers.answers:
        if [getattr(other, k) for k in KEYS] != [getattr(entry, k) for k in KEYS]:
            comparison = compare_answers(other.detections, got, answers.tolerance, threshold)
            print(
                f"vs the {other.runtime}/{other.machine} entry: {comparison.agreement()}"
                + ("" if comparison.ok else f"; beyond tolerance: {comparison.differences()}")
            )
    answers.answers = [
        other
        for other in answers.answers
        if [getattr(other, k) for k in KEYS] != [getattr(entry, k) for k in KEYS]
    ] + [entry]
    save_answers(answers_file, answers)
    print(f"wrote {answers_file} ({len(answers.answers)} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
