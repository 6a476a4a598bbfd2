"""Intruder replays: do real non-printer photos in view make the print-failure alerts fire?

Writes replays of the bundled sample timelapse with a real photo (people, animals, objects;
``agent/intruders.py`` says which, where they come from and what each placement is) inserted after
healthy frame ``--after`` for each of ``--durations`` frames at each of ``--placements``, then the
sample's frames on to ``--last`` (the failure starts at 48), and runs the alert logic of
``edge-agent replay`` on each (one frame every 10 s) for every model and alert config asked for, with
the scene check as the config has it or as ``--scene-check`` / ``--no-scene-check`` says. Any warn or
act before the failure is a false alarm. ``--tables`` chooses what is printed per model and config:

- ``durations``: a row per photo and placement, a column per duration (0: the control without a
  photo); cells ``warns/acts``, then ``w@``/``a@`` the first warn/act: ``i3`` the third intruder
  frame, ``h+2`` the second healthy frame after it;
- ``scene``: a row per placement, a column per photo: the replays that warned / acted before the
  failure (of all durations), then the intrusions of 3+ frames that gave a ``view_changed`` /
  ``obstructed`` event, and where the failure warns and acts without an intruder.

Then the highest failure score of one intruder frame, and a summary: replays with a false warn or
act, replays where the failure's warn and act moved from the control, view events. ``--json``
writes every result, with the machine.

    .venv/bin/python scripts/intruder_replay.py --json /tmp/intruders.json
    .venv/bin/python scripts/intruder_replay.py --models bundled=/tmp/new.tflite --durations 2,12
    .venv/bin/python scripts/intruder_replay.py --tables scene --durations 1,2,3,5,10,30 \\
        --placements whole_stretched,over_print,bottom,corner,side,top_corner
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
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from bench import machine_info  # noqa: E402

from agent.bundled import BUNDLED_MODEL  # noqa: E402
from agent.commands.replay import DEFAULT_INTERVAL_S, point_record, replay_recording  # noqa: E402
from agent.config import AgentConfig, load_config  # noqa: E402
from agent.errors import UserError  # noqa: E402
from agent.fsutil import atomic_write_text  # noqa: E402
from agent.intruders import (  # noqa: E402
    DEFAULT_AFTER,
    PHOTOS,
    PLACEMENTS,
    Image,
    Intrusion,
    ReplayLayout,
    load_photos,
    outcome,
    sample_frames,
    write_replay,
)

SHARED = Path(os.environ.get("EDGE_AGENT_SHARED", REPO.parent / "shared"))
PRINT3D = SHARED / "models" / "print3d" / "print3d_2020-10-23_ssd_uint8.tflite"
MODEL_ORDER = ("bundled", "print3d")
CONFIGS = {
    "default": REPO / "configs" / "default.yaml",
    "printer-octoprint": REPO / "configs" / "printer-octoprint.yaml",
}
DURATIONS = (1, 2, 4, 8, 12, 30)
FAILURE_FRAME = sample_frames()[1]
LAST = 60  # the failure starts at frame 48; the bundled model warns at 50 and acts at 53-54
EVENT_FROM = 3  # an intrusion this long or longer should give a view event (alerts.scene.event_after_samples)

Case = tuple[str, str, int, ReplayLayout]  # photo, placement, intruder frames, the written replay


def alert_config(name: str, model: Path, scene_check: bool | None) -> AgentConfig:
    """The config ``name`` (``CONFIGS``) with its detector pointed at ``model`` (its thresholds
    kept) and, unless ``scene_check`` is None, the scene check on or off."""
    config = load_config(CONFIGS[name])
    alerts = config.alerts
    if scene_check is not None:
        alerts = alerts.model_copy(update={"scene": alerts.scene.model_copy(update={"enabled": scene_check})})
    detector = config.detector.model_copy(update={"model": str(model)})
    return config.model_copy(update={"detector": detector, "alerts": alerts})


def write_cases(tmp: Path, photos: dict[str, Image], args: argparse.Namespace) -> list[Case]:
    """Every replay folder of the matrix under ``tmp``, and last the control without a photo."""
    cases: list[Case] = []
    for photo in photos:
        for placement in args.placements:
            for count in args.durations:
                intrusion = Intrusion(photo, placement, count, args.after)
                layout = write_replay(
                    tmp / f"{photo}-{placement}-{count}", photos, [intrusion], last=args.last
                )
                cases.append((photo, placement, count, layout))
    return [*cases, ("(none)", "-", 0, write_replay(tmp / "control", photos, last=args.last))]


def run_cases(cases: Sequence[Case], config: AgentConfig, labels: dict[str, Any]) -> list[dict[str, Any]]:
    """Replay every case as ``edge-agent replay --json`` does; a row per case, starting with ``labels``."""
    interval = config.source.interval_s or DEFAULT_INTERVAL_S
    rows = []
    for photo, placement, count, layout in cases:
        replay = replay_recording(config, layout.folder, interval_s=interval)
        o = outcome(layout, [point_record(p) for p in replay.points])
        rows.append(
            {**labels, "photo": photo, "placement": placement, "frames": count, "cell": o.cell(), **vars(o)}
        )
    return rows


def durations_table(rows: list[dict[str, Any]], durations: Sequence[int]) -> list[str]:
    """A row per photo and placement (the control first), a column per duration."""
    width = max(len(f"{r['photo']} {r['placement']}") for r in rows)
    lines = [f"{'photo placement':<{width}}  " + "  ".join(f"{f'{d} frames':<22}" for d in durations)]
    keys = sorted({(r["photo"], r["placement"]) for r in rows}, key=lambda k: (k[0] != "(none)", k))
    for photo, placement in keys:
        cells = {r["frames"]: r["cell"] for r in rows if (r["photo"], r["placement"]) == (photo, placement)}
        label = f"{photo} {placement}"
        lines.append(f"{label:<{width}}  " + "  ".join(f"{cells.get(d, ''):<22}" for d in durations))
    return lines


def scene_table(rows: list[dict[str, Any]], placements: Sequence[str], photos: Sequence[str]) -> list[str]:
    """A row per placement, a column per photo: the replays that warned / acted before the failure,
    and the intrusions of 3+ frames that gave a view event (``0/0 ev 4/4``)."""
    width = max(len(p) for p in photos) + 2
    label = max(12, *(len(p) + 1 for p in placements))
    lines = [f"{'':{label}}" + "".join(f"{p[: width - 2]:>{width + 6}}" for p in photos)]
    for placement in placements:
        cells = []
        for photo in photos:
            mine = [r for r in rows if (r["placement"], r["photo"]) == (placement, photo)]
            warned, acted = sum(r["warn"] > 0 for r in mine), sum(r["act"] > 0 for r in mine)
            long = [r for r in mine if r["frames"] >= EVENT_FROM]
            seen = sum(bool(r["views"]) for r in long)
            cells.append(f"{warned}/{acted} ev {seen}/{len(long)}")
        lines.append(f"{placement:{label}}" + "".join(f"{c:>{width + 6}}" for c in cells))
    return lines


def score_table(results: list[dict[str, Any]]) -> list[str]:
    """The highest failure score of one intruder frame per photo and placement (over every
    duration), a column per model and config: how far from the alert levels the photos stay."""
    columns = sorted({(r["model"], r["config"]) for r in results}, key=lambda c: (list(MODEL_ORDER).index(c[0])
                     if c[0] in MODEL_ORDER else 9, c))  # fmt: skip
    keys = sorted({(r["photo"], r["placement"]) for r in results if r["photo"] != "(none)"})
    width = max([len("photo placement"), *(len(f"{p} {m}") for p, m in keys)])
    lines = [f"{'photo placement':<{width}}  " + "  ".join(f"{f'{m} {c}':<26}" for m, c in columns)]
    for photo, placement in keys:
        cells = []
        for model, config in columns:
            peaks = [r["peak_score"] for r in results if (r["model"], r["config"], r["photo"], r["placement"])
                     == (model, config, photo, placement) and r["peak_score"] is not None]  # fmt: skip
            cells.append(f"{max(peaks):<26.3f}" if peaks else f"{'-':<26}")
        lines.append(f"{f'{photo} {placement}':<{width}}  " + "  ".join(cells))
    return lines


def summary_lines(results: list[dict[str, Any]]) -> list[str]:
    """Replays that warned or acted before the failure, replays where the failure's warn and act
    moved from the control of the same model and config, and the view events."""
    controls = {
        (r["model"], r["config"]): (r["failure_warn"], r["failure_act"]) for r in results if r["frames"] == 0
    }
    runs = [r for r in results if r["frames"] > 0]
    alerting = [r for r in runs if r["warn"] or r["act"]]
    moved = [r for r in runs if (r["failure_warn"], r["failure_act"]) != controls[(r["model"], r["config"])]]
    long = [r for r in runs if r["frames"] >= EVENT_FROM]
    lines = [f"replays with a warn or act before the failure: {len(alerting)} of {len(runs)}"]
    lines += [
        f"  {r['model']} {r['config']} {r['photo']} {r['placement']} x{r['frames']}: {r['cell']}"
        for r in alerting
    ]
    lines.append(
        f"replays where the failure's warn and act moved from the replay without an intruder: {len(moved)}"
    )
    lines += [f"  {r['model']} {r['config']} {r['photo']} {r['placement']} x{r['frames']}: warn {r['failure_warn']} "
              f"act {r['failure_act']}" for r in moved]  # fmt: skip
    seen = sum(bool(r["views"]) for r in long)
    lines.append(
        f"intrusions of {EVENT_FROM}+ frames with a view_changed/obstructed event: {seen} of {len(long)}"
    )
    return lines


def print_tables(rows: list[dict[str, Any]], args: argparse.Namespace, photos: Sequence[str]) -> None:
    """The tables ``--tables`` asks for, of one model and config."""
    model, config = rows[0]["model"], rows[0]["config"]
    control = next(r for r in rows if r["frames"] == 0)
    lines = []
    if "durations" in args.tables:
        lines += [f"\n{model} with {config} alert settings (warns/acts; w@/a@ first warn/act)"]
        lines += durations_table(rows, [0, *args.durations])
    if "scene" in args.tables:
        lines += [f"\n{model} model, {config} config without an intruder: warn at sample frame "
                  f"{control['failure_warn']}, act at {control['failure_act']}, before the failure {control['cell']}",
                  f"\n{model} model, {config} config: warn/act before the failure; view events for "
                  f"{EVENT_FROM}+ frame intrusions"]  # fmt: skip
        lines += scene_table([r for r in rows if r["frames"] > 0], args.placements, photos)
    print("\n".join(lines), flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, with the comma lists split and checked."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--models",
        default="bundled,print3d",
        help="comma list of bundled, print3d or NAME=PATH.tflite (default: bundled,print3d)",
    )
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"alert configs: {', '.join(CONFIGS)}")
    p.add_argument("--photos", default="", help="comma list of photo names (default: all found)")
    p.add_argument("--placements", default="whole,part", help=f"comma list of {', '.join(PLACEMENTS)}")
    p.add_argument("--durations", default=",".join(map(str, DURATIONS)), help="intruder frames per replay")
    p.add_argument(
        "--after", type=int, default=DEFAULT_AFTER, help="healthy sample frames before the intruder"
    )
    p.add_argument(
        "--last", type=int, default=LAST, help="the last sample frame replayed (48-90: the failure)"
    )
    p.add_argument(
        "--scene-check",
        action=argparse.BooleanOptionalAction,
        help="turn the scene check on or off (default: as the config says)",
    )
    p.add_argument("--tables", default="durations,scene", help="comma list of durations, scene")
    p.add_argument("--json", type=Path, help="write every result and the machine here")
    args = p.parse_args(argv)  # fmt: skip
    args.configs, args.placements = args.configs.split(","), args.placements.split(",")
    args.durations = [int(d) for d in args.durations.split(",")]
    args.tables = args.tables.split(",")
    builtin = {"bundled": BUNDLED_MODEL, "print3d": PRINT3D}
    specs = [item.partition("=") for item in args.models.split(",")]
    for option, given, known in (("configs", args.configs, CONFIGS), ("placements", args.placements, PLACEMENTS),
                                 ("tables", args.tables, ("durations", "scene")),
                                 ("models", [n for n, _, path in specs if not path], builtin)):  # fmt: skip
        if not set(given) <= set(known):
            p.error(f"--{option}: give some of {', '.join(known)}")
    args.models = {name: Path(path) if path else builtin[name] for name, _, path in specs}
    if not 1 <= args.after < FAILURE_FRAME or not args.after <= args.last <= len(sample_frames()[0]):
        p.error(
            f"--after: a healthy frame 1..{FAILURE_FRAME - 1}; --last: from --after to {len(sample_frames()[0])}"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the matrix; exit 0 (the figures are the output, not a verdict), 2 for what the user must fix."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    machine = machine_info()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['os']}, Python {machine['python']}, "
          f"load {machine['load_avg_1m_start']}, commit {machine['git_commit']}")  # fmt: skip
    started = time.monotonic()
    try:
        photos = load_photos(
            SHARED if SHARED.is_dir() else None, args.photos.split(",") if args.photos else None
        )
        with tempfile.TemporaryDirectory(prefix="intruders-") as tmp:
            cases = write_cases(Path(tmp), photos, args)
            results = []
            for model_name, model in args.models.items():
                for config_name in args.configs:
                    config = alert_config(config_name, model, args.scene_check)
                    labels = {"model": model_name, "model_path": str(model), "config": config_name,
                              "scene_check": config.alerts.scene.enabled}  # fmt: skip
                    rows = run_cases(cases, config, labels)
                    print_tables(rows, args, list(photos))
                    results += rows
    except UserError as e:
        print(f"intruder_replay: {e}", file=sys.stderr)
        return e.exit_code
    print("\nhighest failure score of one intruder frame (the alerts' per-frame score)")
    print("\n".join(score_table(results)))
    print("\n" + "\n".join(summary_lines(results)))
    print(f"{len(results)} replays (controls included) in {time.monotonic() - started:.0f} s")
    if args.json:
        doc = {"command": " ".join(sys.argv), "machine": machine, "after": args.after, "last": args.last,
               "photos": {name: PHOTOS[name].shows for name in photos}, "results": results}  # fmt: skip
        atomic_write_text(args.json, json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
