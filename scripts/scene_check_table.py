#!/usr/bin/env python3
"""Measure the scene check: real photos put into the healthy part of the sample print, replayed.

    .venv/bin/python scripts/scene_check_table.py [--frames 1,2,3,5,10,30] [--json out.json]

For every model (the bundled guidance model, Print Nanny's print3d from ../shared), config (the
bundled default config; configs/printer-octoprint.yaml's detector thresholds and alerts), photo
(tests/intruders.py: ../shared/models/images and scikit-image's photos), placement and length, it
writes a recording (the sample's frames 1..60 with the photo inserted for N frames after frame 36)
and replays it with the code ``edge-agent replay`` runs (``replay_recording``, one frame every 10 s),
then counts warn and act before the failure (frame 48), the view events, and whether the failure
still warns and acts where it does without the photo. It prints the machine, a table per model and config, and
a summary; ``--json`` writes every run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.commands.replay import replay_recording  # noqa: E402
from agent.config import AgentConfig, load_config  # noqa: E402
from tests.intruders import (  # noqa: E402
    FAILURE_FRAME,
    PLACEMENTS,
    Intrusion,
    load_photos,
    write_recording,
)

SHARED = Path(os.environ.get("EDGE_AGENT_SHARED", REPO.parent / "shared"))
PRINT3D = SHARED / "models" / "print3d" / "print3d_2020-10-23_ssd_uint8.tflite"
AFTER = 36  # the photo comes after this sample frame (past both configs' startup grace)
LAST = 60  # sample frames replayed: the failure starts at 48, warns at 50, acts at 54


def configs(model: str) -> dict[str, AgentConfig]:
    """The two configs with ``model``: the bundled default, and the OctoPrint example's thresholds."""
    default = load_config(None)
    printer = load_config(REPO / "configs" / "printer-octoprint.yaml")
    out = {}
    for name, config in (("default", default), ("printer", printer)):
        detector = config.detector.model_copy(update={"model": model})
        out[name] = config.model_copy(update={"detector": detector})
    return out


def one_run(config: AgentConfig, folder: Path, shows: dict[str, str]) -> dict[str, Any]:
    """Replay ``folder``; the alerts before and after the failure and the view events."""
    replay = replay_recording(config, folder, interval_s=10.0)
    before: list[str] = []
    after: dict[str, int] = {}
    for point, event in replay.events:
        what = shows[point.name]
        if what.startswith("sample_") and int(what.removeprefix("sample_")) >= FAILURE_FRAME:
            if event.kind in ("warn", "act"):
                after.setdefault(event.kind, int(what.removeprefix("sample_")))
        elif event.kind in ("warn", "act"):
            before.append(f"{event.kind}@{what}")
    views = [v.kind for _, v in replay.view_events if v.kind != "view_restored"]
    return {
        "before_failure": before,
        "failure_warn": after.get("warn"),
        "failure_act": after.get("act"),
        "view_events": views,
        "left_out": sum(p.left_out for p in replay.points),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", default="1,2,3,5,10,30", help="intrusion lengths, comma-separated")
    parser.add_argument("--placements", default=",".join(PLACEMENTS), help="comma-separated")
    parser.add_argument("--photos", default="", help="comma-separated (default: all)")
    parser.add_argument("--json", type=Path, help="write every run here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    lengths = [int(v) for v in args.frames.split(",")]
    placements = args.placements.split(",")
    photos = load_photos(SHARED if SHARED.is_dir() else None, args.photos.split(",") if args.photos else None)
    models = {"bundled": str(REPO / "agent" / "data" / "print3d_guidance.tflite")}
    if PRINT3D.exists():
        models["print3d"] = str(PRINT3D)
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"photos: {', '.join(photos)}; placements: {', '.join(placements)}; lengths: {lengths}")
    runs: list[dict[str, Any]] = []
    baselines: dict[tuple[str, str], tuple[int | None, int | None]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        recordings: dict[tuple[str, str, int], tuple[Path, dict[str, str]]] = {}
        for photo in photos:
            for placement in placements:
                for n in lengths:
                    folder = Path(tmp) / f"{photo}-{placement}-{n}"
                    shows = write_recording(
                        folder, photos, [Intrusion(photo, placement, n, AFTER)], last=LAST
                    )
                    recordings[(photo, placement, n)] = (folder, shows)
        plain = Path(tmp) / "no-intruder"
        plain_shows = write_recording(plain, photos, [], last=LAST)
        for model_name, model in models.items():
            for config_name, config in configs(model).items():
                base = one_run(config, plain, plain_shows)
                baselines[(model_name, config_name)] = (base["failure_warn"], base["failure_act"])
                print(
                    f"\n{model_name} model, {config_name} config without an intruder: warn at sample frame "
                    f"{base['failure_warn']}, act at {base['failure_act']}, before the failure {base['before_failure']}"
                )
                for (photo, placement, n), (folder, shows) in recordings.items():
                    result = one_run(config, folder, shows)
                    runs.append(
                        {
                            "model": model_name,
                            "config": config_name,
                            "photo": photo,
                            "placement": placement,
                            "frames": n,
                            **result,
                        }
                    )
                print_table(
                    model_name,
                    config_name,
                    [r for r in runs if (r["model"], r["config"]) == (model_name, config_name)],
                    placements,
                    list(photos),
                )
    print_summary(runs, baselines)
    print(f"{len(runs)} replays in {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


def print_table(
    model: str, config: str, runs: list[dict[str, Any]], placements: list[str], photos: list[str]
) -> None:
    """One cell per placement and photo: warn/act before the failure over all lengths, and the
    lengths of 3+ frames that gave a view event (e.g. ``0/0 ev 4/4``)."""
    print(
        f"\n{model} model, {config} config: warn/act before the failure; view events for 3+ frame intrusions"
    )
    width = max(len(p) for p in photos) + 2
    print(f"{'':12}" + "".join(f"{p[: width - 2]:>{width + 6}}" for p in photos))
    for placement in placements:
        cells = []
        for photo in photos:
            mine = [r for r in runs if r["placement"] == placement and r["photo"] == photo]
            warn = sum(any(b.startswith("warn") for b in r["before_failure"]) for r in mine)
            act = sum(any(b.startswith("act") for b in r["before_failure"]) for r in mine)
            long = [r for r in mine if r["frames"] >= 3]
            seen = sum(bool(r["view_events"]) for r in long)
            cells.append(f"{warn}/{act} ev {seen}/{len(long)}")
        print(f"{placement:12}" + "".join(f"{c:>{width + 6}}" for c in cells))


def print_summary(
    runs: list[dict[str, Any]], baselines: dict[tuple[str, str], tuple[int | None, int | None]]
) -> None:
    """Totals: runs that warned or acted before the failure, runs where the failure's warn and act
    moved from where they are without an intruder."""
    alerting = [r for r in runs if r["before_failure"]]
    moved = [r for r in runs if (r["failure_warn"], r["failure_act"]) != baselines[(r["model"], r["config"])]]
    long = [r for r in runs if r["frames"] >= 3]
    print(f"\nruns with a warn or act before the failure: {len(alerting)} of {len(runs)}")
    for r in alerting:
        print(
            f"  {r['model']} {r['config']} {r['photo']} {r['placement']} x{r['frames']}: {r['before_failure']}"
        )
    print(f"runs where the failure's warn and act moved from the run without an intruder: {len(moved)}")
    for r in moved:
        print(
            f"  {r['model']} {r['config']} {r['photo']} {r['placement']} x{r['frames']}: warn {r['failure_warn']} act {r['failure_act']}"
        )
    print(
        f"intrusions of 3+ frames with a view_changed/obstructed event: {sum(bool(r['view_events']) for r in long)} of {len(long)}"
    )


if __name__ == "__main__":
    sys.exit(main())
