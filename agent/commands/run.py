"""``edge-agent run``: the main job, configured by one YAML file.

Without ``--config`` it runs the embedded default: the bundled guidance model on the
bundled sample timelapse, writing pre-labels under ``./edge-agent-data`` with MQTT
messages waiting in the on-disk outbox.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent import sdnotify
from agent.commands.alerts_choice import alerts_for_model
from agent.commands.interrupts import Interrupts
from agent.commands.values import like, one_line
from agent.config import AgentConfig, load_config
from agent.config.pipeline import PipelineSettings
from agent.config.source import SourceSettings
from agent.errors import ConfigError
from agent.pipeline import Pipeline
from agent.startup_check import BEFORE_RUN, run_startup_checks

log = logging.getLogger(__name__)


def add_run_command(subparsers: Any) -> None:
    """Register ``edge-agent run``."""
    parser = subparsers.add_parser(
        "run",
        help="run the capture loop (the main job)",
        description="Read frames from the configured source, detect, write VoTT pre-labels and "
        "publish over MQTT until the source ends or SIGINT/SIGTERM.",
    )
    parser.add_argument("--config", "-c", help="YAML config file (default: the bundled demo config)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="open everything run opens at start-up (secrets, TLS files, output folders, model, its known "
        "answers, the printer host with its API key, source) without running a frame, and exit",
    )
    parser.add_argument("--source", help="override source.url (folder, video, /dev/videoN, URL)")
    parser.add_argument("--watch", action="store_true", help="folder source: keep waiting for new files")
    parser.add_argument(
        "--interval-s",
        type=like(SourceSettings, "interval_s"),
        help="override source.interval_s (seconds between frames)",
    )
    parser.add_argument("--max-fps", type=like(SourceSettings, "max_fps"), help="override source.max_fps")
    parser.add_argument("--model", help="override detector.model")
    parser.add_argument("--output-dir", help="override output.dir")
    parser.add_argument(
        "--max-frames", type=like(PipelineSettings, "max_frames"), help="stop after this many frames"
    )
    parser.add_argument("--no-mqtt", action="store_true", help="do not connect to a broker (outbox off)")
    parser.add_argument(
        "--no-alerts", action="store_true", help="no printer alerts (failure score, warn, pause) this run"
    )
    parser.add_argument(
        "--from-start",
        action="store_true",
        help="a folder or video: process it from the beginning, not after where the last run stopped",
    )
    parser.add_argument(
        "--allow-drift",
        action="store_true",
        help="start even when the model's known-answer check fails (logged as a warning)",
    )
    parser.set_defaults(handler=run_run)


def apply_overrides(config: AgentConfig, args: argparse.Namespace) -> AgentConfig:
    """The config with the command-line overrides applied (validated like the file)."""
    data = config.model_dump()
    if args.source:
        data["source"]["url"] = args.source
        data["source"]["id"] = None
    if args.watch:
        data["source"]["watch"] = True
    if args.interval_s is not None:
        data["source"]["interval_s"] = args.interval_s
    if args.max_fps is not None:
        data["source"]["max_fps"] = args.max_fps
    if args.model:
        data["detector"]["model"] = args.model
    if args.output_dir:
        data["output"]["dir"] = args.output_dir
    if args.max_frames is not None:
        data["pipeline"]["max_frames"] = args.max_frames
    if args.no_mqtt:
        data["mqtt"]["enabled"] = False
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid command-line option: {one_line(exc)}") from None


def status_line(pipeline: Pipeline) -> str:
    """The one-line STATUS shown by `systemctl status`: rate, counts, outbox size."""
    stats = pipeline.stats()
    frames = stats["frames"]
    outbox = stats.get("mqtt", {}).get("outbox", {}).get("messages")
    text = f"{stats['fps']:.1f} fps, {frames['processed']} frames, {frames['kept']} kept"
    return text + (f", outbox {outbox}" if outbox is not None else "")


@contextlib.contextmanager
def supervise(pipeline: Pipeline, check_s: float = 1.0) -> Iterator[sdnotify.Watchdog]:
    """Tell systemd we are ready, and beat its watchdog while the pipeline progresses.

    A thread asks the pipeline what is stuck every ``check_s`` seconds and beats the watchdog
    only while nothing is: a frame stuck in a detector (or a replacement being built), a source
    read that never returns, or a stuck output stage stops the pings (``agent.stall``).
    """
    watchdog = sdnotify.Watchdog(lambda: status_line(pipeline))
    done = threading.Event()

    def check() -> None:
        reported: list[str] = []
        while not done.wait(check_s):
            stuck = pipeline.stalled_parts()
            if not stuck:
                watchdog.beat()
            elif [part.split(" (")[0] for part in stuck] != reported:
                log.error("stuck: %s; the systemd watchdog pings stop", ", ".join(stuck))
            reported = [part.split(" (")[0] for part in stuck]

    checker = threading.Thread(target=check, name="watchdog-check", daemon=True)
    watchdog.beat()
    sdnotify.notify(ready=True, status=status_line(pipeline))
    with watchdog:
        checker.start()
        try:
            yield watchdog
        finally:
            done.set()
            sdnotify.notify(stopping=True, status="stopping")


def run_run(args: argparse.Namespace) -> int:
    """Load, check, build and run the agent."""
    config = apply_overrides(load_config(args.config), args)
    config = alerts_for_model(config, from_default_config=args.config is None, no_alerts=args.no_alerts)
    if args.check:
        for line in run_startup_checks(config, allow_drift=args.allow_drift):
            print(line)
        print(f"{args.config or 'the bundled default config'}: ok")
        return 0
    run_startup_checks(config, BEFORE_RUN)
    from agent.app import build_agent

    agent = build_agent(config, from_start=args.from_start, allow_drift=args.allow_drift)
    with Interrupts(agent.stop) as interrupts, supervise(agent.pipeline):
        stats = agent.run()
    frames = stats["frames"]
    out = Path(config.output.data_dir())
    reviewed = stats.get("vott", {}).get("kept_reviewed", 0)
    print(
        f"processed {frames['processed']} frames, kept {frames['kept']}, skipped {frames['skipped']}, "
        f"dropped {frames['dropped']}; VoTT project in {out / 'vott'}"
        + (f" ({reviewed} frame(s) a reviewer changed left as they were)" if reviewed else ""),
        file=sys.stderr,
    )
    if interrupts.signal is not None:
        print(
            f"stopped by {interrupts.signal.name}: everything processed is saved; a folder or video "
            "continues after the last frame processed when the agent starts again",
            file=sys.stderr,
        )
    return interrupts.exit_code
