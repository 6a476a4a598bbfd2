"""Intruder replays: do real non-printer photos in view make the print-failure alerts fire?

Builds replays of the bundled sample timelapse with a real photo (people, animals, objects;
``agent/intruders.py`` says which and where they come from) inserted for 1-30 frames into its
healthy part, as the whole view or over part of it, and runs the alert logic of
``edge-agent replay`` on each, for every model and alert config asked for. Any warn or act on
these replays is a false alarm. Prints one table per model and config (cells: ``warns/acts``,
``w@``/``a@`` the first warn/act: ``i3`` the third intruder frame, ``h+2`` the second healthy
frame after it) and writes everything, with the machine, to ``--json``.

    .venv/bin/python scripts/intruder_replay.py --json /tmp/intruders.json
    .venv/bin/python scripts/intruder_replay.py --models bundled=/tmp/new.tflite --durations 2,12
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from bench import machine_info  # noqa: E402

from agent.bundled import BUNDLED_MODEL  # noqa: E402
from agent.commands.replay import DEFAULT_INTERVAL_S, point_record, replay_recording  # noqa: E402
from agent.config import AgentConfig, load_config  # noqa: E402
from agent.intruders import (  # noqa: E402
    DEFAULT_AFTER,
    DURATIONS,
    MODES,
    IntruderPhoto,
    Mode,
    Outcome,
    ReplayLayout,
    build_replay,
    find_photos,
    outcome,
)

SHARED = Path(os.environ.get("EDGE_AGENT_SHARED", REPO.parent / "shared"))
PRINT3D = SHARED / "models" / "print3d" / "print3d_2020-10-23_ssd_uint8.tflite"
MODEL_ORDER = ("bundled", "print3d")
CONFIGS = {
    "default": REPO / "configs" / "default.yaml",
    "printer-octoprint": REPO / "configs" / "printer-octoprint.yaml",
}


def with_model(config: AgentConfig, model: Path) -> AgentConfig:
    """``config`` with its detector pointed at ``model`` (its thresholds kept)."""
    return config.model_copy(update={"detector": config.detector.model_copy(update={"model": str(model)})})


def run_one(config: AgentConfig, layout: ReplayLayout) -> Outcome:
    """Replay the layout's folder as ``edge-agent replay --json`` does; its outcome."""
    interval = config.source.interval_s or DEFAULT_INTERVAL_S
    replay = replay_recording(config, layout.folder, interval_s=interval)
    return outcome(layout, [point_record(p) for p in replay.points])


Case = tuple[str, str, int, ReplayLayout]  # photo, mode, intruder frames, the built replay


def build_cases(
    tmp: Path,
    photos: Sequence[IntruderPhoto],
    modes: Sequence[Mode],
    durations: Sequence[int],
    after: int,
    through_failure: bool,
) -> list[Case]:
    """Every replay folder of the matrix under ``tmp``, and the control without a photo."""
    cases: list[Case] = []
    for photo in photos:
        image = photo.load()
        for mode in modes:
            for count in durations:
                folder = tmp / f"{photo.name}-{mode}-{count}"
                layout = build_replay(
                    folder, image, mode, count, after=after, through_failure=through_failure
                )
                cases.append((photo.name, mode, count, layout))
    control = build_replay(tmp / "control", None, "whole", 0, after=after, through_failure=through_failure)
    return [*cases, ("(none)", "-", 0, control)]


def run_cases(cases: Sequence[Case], model_name: str, model: Path, config_name: str) -> list[dict[str, Any]]:
    """Replay every case with ``model`` and the named config's detector thresholds and alerts."""
    config = with_model(load_config(CONFIGS[config_name]), model)
    rows = []
    for photo, mode, count, layout in cases:
        o = run_one(config, layout)
        rows.append({"model": model_name, "model_path": str(model), "config": config_name, "photo": photo,
                     "mode": mode, "frames": count, "cell": o.cell(), **vars(o)})  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]], durations: Sequence[int]) -> list[str]:
    """One text table: a row per photo and mode, a column per duration."""
    width = max(len(f"{r['photo']} {r['mode']}") for r in rows)
    lines = [f"{'photo mode':<{width}}  " + "  ".join(f"{f'{d} frames':<22}" for d in durations)]
    keys = sorted({(r["photo"], r["mode"]) for r in rows}, key=lambda k: (k[0] != "(none)", k))
    for photo, mode in keys:
        cells = {r["frames"]: r["cell"] for r in rows if r["photo"] == photo and r["mode"] == mode}
        lines.append(
            f"{f'{photo} {mode}':<{width}}  " + "  ".join(f"{cells.get(d, ''):<22}" for d in durations)
        )
    return lines


def score_table(results: list[dict[str, Any]]) -> list[str]:
    """The highest failure score of one intruder frame per photo and mode (over every duration),
    a column per model and config: how far from the alert levels the photos stay."""
    columns = sorted({(r["model"], r["config"]) for r in results}, key=lambda c: (list(MODEL_ORDER).index(c[0])
                     if c[0] in MODEL_ORDER else 9, c))  # fmt: skip
    keys = sorted({(r["photo"], r["mode"]) for r in results if r["photo"] != "(none)"})
    width = max([len("photo mode"), *(len(f"{p} {m}") for p, m in keys)])
    lines = [f"{'photo mode':<{width}}  " + "  ".join(f"{f'{m} {c}':<26}" for m, c in columns)]
    for photo, mode in keys:
        cells = []
        for model, config in columns:
            peaks = [r["peak_score"] for r in results if (r["model"], r["config"], r["photo"], r["mode"])
                     == (model, config, photo, mode) and r["peak_score"] is not None]  # fmt: skip
            cells.append(f"{max(peaks):<26.3f}" if peaks else f"{'-':<26}")
        lines.append(f"{f'{photo} {mode}':<{width}}  " + "  ".join(cells))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the matrix; exit 0 (the figures are the output, not a verdict)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        default="bundled,print3d",
        help="comma list of bundled, print3d or NAME=PATH.tflite (default: bundled,print3d)",
    )
    p.add_argument(
        "--configs", default="default,printer-octoprint", help="alert configs: default, printer-octoprint"
    )
    p.add_argument("--durations", default=",".join(map(str, DURATIONS)), help="intruder frames per replay")
    p.add_argument("--modes", default=",".join(MODES), help="whole, part")
    p.add_argument("--photos", default="", help="comma list of photo names (default: all found)")
    p.add_argument("--after", type=int, default=DEFAULT_AFTER, help="healthy frames before the intruder")
    p.add_argument("--through-failure", action="store_true", help="go on into the failure (frames 48-90)")
    p.add_argument("--json", type=Path, help="write every result and the machine here")
    args = p.parse_args(argv)  # fmt: skip
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    models: dict[str, Path] = {}
    for item in args.models.split(","):
        name, _, path = item.partition("=")
        models[name] = Path(path) if path else {"bundled": BUNDLED_MODEL, "print3d": PRINT3D}[name]
    photos = [ph for ph in find_photos(SHARED) if not args.photos or ph.name in args.photos.split(",")]
    durations = [int(d) for d in args.durations.split(",")]
    modes = [cast(Mode, m) for m in args.modes.split(",")]
    if not set(modes) <= set(MODES):
        p.error(f"--modes: give some of {', '.join(MODES)}")
    if len(photos) < 1:
        print("no replay photos found: needs ../shared/models/images or scikit-image", file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="intruders-") as tmp:
        cases = build_cases(Path(tmp), photos, modes, durations, args.after, args.through_failure)
        results = []
        for model_name, model in models.items():
            for config_name in args.configs.split(","):
                rows = run_cases(cases, model_name, model, config_name)
                print(f"\n{model_name} with {config_name} alert settings (warns/acts; w@/a@ first warn/act)")
                for line in table(rows, [0, *durations]):
                    print(line)
                sys.stdout.flush()
                results += rows
    print("\nhighest failure score of one intruder frame (the alerts' per-frame score)")
    for line in score_table(results):
        print(line)
    minutes = (time.monotonic() - started) / 60
    false = sum(1 for r in results if r["warn"] or r["act"])
    print(f"\n{len(results)} replays in {minutes:.1f} min; {false} with a false warn or act")
    if args.json:
        doc = {"command": " ".join(sys.argv), "machine": machine_info(), "after": args.after,
               "photos": {ph.name: ph.shows for ph in photos}, "results": results}  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
