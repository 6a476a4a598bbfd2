"""Where a model's boxes land on real printer-camera frames, beside Print Nanny's print3d model.

Runs the bundled guidance model (or ``--model``) and print3d on the real frames in
``../shared/models/print3d/images`` (another camera and printer than any training frame), draws
both models' boxes side by side into one PNG per frame (ours left, print3d right; ``--out``),
and prints every box with its score and, for each of print3d's confident failure and nozzle
boxes (score >= 0.5), whether ours has a box of the same label at IoU >= 0.5. Look at the PNGs:
scores alone do not say whether a box sits on the spaghetti or on a fan.

    .venv/bin/python scripts/real_frames.py --out /tmp/real-frames
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from agent.boxes import iou_matrix  # noqa: E402
from agent.bundled import BUNDLED_MODEL  # noqa: E402
from agent.config.detector import DetectorSettings  # noqa: E402
from agent.detect.detector import Detector  # noqa: E402
from agent.detections import Detections  # noqa: E402

SHARED = Path(os.environ.get("EDGE_AGENT_SHARED", REPO.parent / "shared"))
PRINT3D = SHARED / "models" / "print3d" / "print3d_2020-10-23_ssd_uint8.tflite"
FRAMES = SHARED / "models" / "print3d" / "images"
COLOURS = {"nozzle": (255, 200, 0), "raft": (0, 200, 255), "print": (0, 220, 0), "adhesion": (255, 0, 255),
           "spaghetti": (0, 0, 255)}  # fmt: skip
CONFIDENT = 0.5  # print3d boxes at or above this are the reference regions
MATCH_IOU = 0.5


def draw(image: np.ndarray, dets: Detections, title: str) -> np.ndarray:
    """A 960 px wide copy of ``image`` with ``dets`` drawn (weakest first) and ``title``."""
    scale = 960 / image.shape[1]
    out = cv2.resize(image, (960, round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    order = np.argsort(dets.score)
    names = dets.label_names()
    for i in order:
        x1, y1, x2, y2 = (int(v * scale) for v in dets.xyxy[i])
        colour = COLOURS.get(names[i], (255, 255, 255))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        label = f"{names[i]} {dets.score[i]:.2f}"
        cv2.putText(
            out, label, (x1 + 2, max(14, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA
        )
        cv2.putText(
            out, label, (x1 + 2, max(14, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA
        )
    cv2.putText(out, title, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(out, title, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
    return out


def matches(ours: Detections, reference: Detections) -> list[dict[str, Any]]:
    """For each confident reference box of a failure or a nozzle: our best same-label IoU."""
    rows = []
    names, ref_names = ours.label_names(), reference.label_names()
    for j, label in enumerate(ref_names):
        if reference.score[j] < CONFIDENT or label not in ("spaghetti", "adhesion", "nozzle"):
            continue
        same = [i for i, n in enumerate(names) if n == label]
        ious = iou_matrix(ours.xyxy[same], reference.xyxy[j : j + 1])[:, 0] if same else np.zeros(0)
        best = int(np.argmax(ious)) if len(ious) else -1
        rows.append({"label": label, "print3d_score": round(float(reference.score[j]), 2),
                     "best_iou": round(float(ious[best]), 2) if best >= 0 else 0.0,
                     "our_score": round(float(ours.score[same[best]]), 2) if best >= 0 else None,
                     "matched": bool(best >= 0 and ious[best] >= MATCH_IOU)})  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Draw and compare; exit 2 when the real frames or print3d are missing."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=BUNDLED_MODEL, help="our model (default: the bundled one)")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    p.add_argument("--score", type=float, default=0.25, help="draw and list boxes at or above this score")
    p.add_argument("--json", type=Path, help="also write the boxes and matches here")
    args = p.parse_args(argv)
    if not FRAMES.is_dir() or not PRINT3D.is_file():
        print(f"needs the real frames and print3d in {SHARED / 'models'} (../shared)", file=sys.stderr)
        return 2
    ours = Detector(DetectorSettings(model=str(args.model), score_threshold=args.score))
    theirs = Detector(DetectorSettings(model=str(PRINT3D), score_threshold=args.score))
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"model": str(args.model), "score_threshold": args.score, "frames": {}}
    found = total = 0
    for path in sorted(FRAMES.glob("*.jpg")):
        image = np.asarray(cv2.imread(str(path), cv2.IMREAD_COLOR), dtype=np.uint8)
        a, b = ours.detect(image), theirs.detect(image)
        cv2.imwrite(str(args.out / f"{path.stem}.png"),
                    np.hstack([draw(image, a, f"ours: {args.model.name}"), draw(image, b, "print3d")]))  # fmt: skip
        rows = matches(a, b)
        found, total = found + sum(r["matched"] for r in rows), total + len(rows)
        report["frames"][path.name] = {"ours": a.to_records(), "print3d": b.to_records(), "matches": rows}
        print(f"{path.name} ({image.shape[1]}x{image.shape[0]})")
        for name, dets in (("ours", a), ("print3d", b)):
            boxes = ", ".join(f"{n} {s:.2f} [{', '.join(str(int(v)) for v in xy)}]"
                              for n, s, xy in zip(dets.label_names(), dets.score, dets.xyxy, strict=True))  # fmt: skip
            print(f"  {name:8s} {boxes or '-'}")
        for r in rows:
            print(f"  print3d {r['label']} {r['print3d_score']}: ours best IoU {r['best_iou']} "
                  f"({'matched' if r['matched'] else 'not matched'})")  # fmt: skip
    print(f"matched {found} of {total} confident print3d failure/nozzle boxes at IoU >= {MATCH_IOU}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
