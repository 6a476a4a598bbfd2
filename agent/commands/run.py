"""``edge-agent run``: the main job, configured by one YAML file.

Without ``--config`` it runs the embedded default: the bundled guidance model on the
bundled sample timelapse, writing pre-labels under ``./edge-agent-data`` with MQTT
messages waiting in the on-disk outbox.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from agent.config import AgentConfig, load_config

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
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    parser.add_argument("--source", help="override source.url (folder, video, /dev/videoN, URL)")
    parser.add_argument("--model", help="override detector.model")
    parser.add_argument("--output-dir", help="override output.dir")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--no-mqtt", action="store_true", help="do not connect to a broker (outbox off)")
    parser.set_defaults(handler=run_run)


def apply_overrides(config: AgentConfig, args: argparse.Namespace) -> AgentConfig:
    """The config with the command-line overrides applied (validated like the file)."""
    data = config.model_dump()
    if args.source:
        data["source"]["url"] = args.source
        data["source"]["id"] = None
    if args.model:
        data["detector"]["model"] = args.model
    if args.output_dir:
        data["output"]["dir"] = args.output_dir
    if args.max_frames is not None:
        data["pipeline"]["max_frames"] = args.max_frames
    if args.no_mqtt:
        data["mqtt"]["enabled"] = False
    return AgentConfig.model_validate(data)


def run_run(args: argparse.Namespace) -> int:
    """Load, check, build and run the agent."""
    config = apply_overrides(load_config(args.config), args)
    if args.check:
        where = args.config or "the bundled default config"
        print(f"{where}: ok")
        return 0
    from agent.app import build_agent

    agent = build_agent(config)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        agent.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stats = agent.run()
    frames = stats["frames"]
    out = Path(config.output.data_dir())
    print(
        f"processed {frames['processed']} frames, kept {frames['kept']}, skipped {frames['skipped']}, "
        f"dropped {frames['dropped']}; VoTT project in {out / 'vott'}",
        file=sys.stderr,
    )
    return 0
