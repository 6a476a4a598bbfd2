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
from agent.commands.interrupts import Interrupts
from agent.config import AgentConfig, load_config
from agent.errors import ConfigError
from agent.pipeline import Pipeline

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
        help="validate the config, reach the printer host (printer.kind) with its API key, and exit",
    )
    parser.add_argument("--source", help="override source.url (folder, video, /dev/videoN, URL)")
    parser.add_argument("--watch", action="store_true", help="folder source: keep waiting for new files")
    parser.add_argument(
        "--interval-s", type=float, help="override source.interval_s (seconds between frames)"
    )
    parser.add_argument("--max-fps", type=float, help="override source.max_fps")
    parser.add_argument("--model", help="override detector.model")
    parser.add_argument("--output-dir", help="override output.dir")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--no-mqtt", action="store_true", help="do not connect to a broker (outbox off)")
    parser.add_argument(
        "--from-start",
        action="store_true",
        help="a folder or video: process it from the beginning, not after where the last run stopped",
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
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid command-line option: {problems}") from None


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

    A thread checks ``pipeline.progressing()`` every ``check_s`` seconds and beats the watchdog
    only then; a frame stuck in the detector or an output stage stops the pings.
    """
    watchdog = sdnotify.Watchdog(lambda: status_line(pipeline))
    done = threading.Event()

    def check() -> None:
        while not done.wait(check_s):
            if pipeline.progressing():
                watchdog.beat()

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


def check_run(config: AgentConfig, where: str) -> int:
    """``run --check``: the config is valid (we got here), and the printer host answers with the key.

    Exit code 0 when both are fine, 2 when the printer part of the config is wrong (the key file,
    a rejected key, a URL that is not the host's API), 1 when the host does not answer."""
    print(f"{where}: ok")
    if config.printer.kind == "none":
        return 0
    from agent.printer.check import check_printer

    verdict = check_printer(config.printer, config.printer.timeout_s)
    print(f"printer: {verdict.level}: {verdict.line()}")
    if verdict.level in ("OK", "WARN"):
        return 0
    return 2 if verdict.config_problem else 1


def run_run(args: argparse.Namespace) -> int:
    """Load, check, build and run the agent."""
    config = apply_overrides(load_config(args.config), args)
    if args.check:
        return check_run(config, args.config or "the bundled default config")
    from agent.app import build_agent

    agent = build_agent(config, from_start=args.from_start)
    with Interrupts(agent.stop) as interrupts, supervise(agent.pipeline):
        stats = agent.run()
    frames = stats["frames"]
    out = Path(config.output.data_dir())
    print(
        f"processed {frames['processed']} frames, kept {frames['kept']}, skipped {frames['skipped']}, "
        f"dropped {frames['dropped']}; VoTT project in {out / 'vott'}",
        file=sys.stderr,
    )
    if interrupts.signal is not None:
        print(
            f"stopped by {interrupts.signal.name}: everything processed is saved; a folder or video "
            "continues after the last frame processed when the agent starts again",
            file=sys.stderr,
        )
    return interrupts.exit_code
