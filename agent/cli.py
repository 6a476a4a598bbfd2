"""edge-agent command line: one sub-command per job.

Each sub-command lives beside the code it drives and registers itself through an
``add_<name>_command(subparsers)`` function listed in ``COMMANDS``; the handler it sets
(``handler=fn``, ``fn(args) -> int``) returns the exit code. ``UserError`` from anywhere
is printed without a traceback and exits 2 (usage/config) or 1 (runtime).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from agent import __version__
from agent.commands.values import AgentArgumentParser, number
from agent.errors import EXIT_RUNTIME, UserError
from agent.pixel_cap import DEFAULT_MAX_MEGAPIXELS, MAX_MEGAPIXELS_ENV, set_max_pixels

# "module:function" that registers a sub-command; imported in this order.
COMMANDS: list[str] = [
    "agent.commands.run:add_run_command",
    "agent.commands.detect:add_detect_command",
    "agent.commands.label:add_label_command",
    "agent.commands.replay:add_replay_command",
    "agent.review.cli:add_review_command",
    "export.cli:add_export_command",
    "export.cli:add_eval_command",
    "agent.commands.doctor:add_doctor_command",
    "agent.commands.models:add_models_command",
]

log = logging.getLogger("edge-agent")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    parser = AgentArgumentParser(
        prog="edge-agent",
        description="Edge inference agent: detect objects in camera frames, write VoTT pre-labels, "
        "publish over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging verbosity (default INFO)",
    )
    parser.add_argument(
        "--max-megapixels",
        type=number(float, gt=0),
        metavar="MP",
        help=f"refuse images larger than this, for every command (default ${MAX_MEGAPIXELS_ENV}, "
        f"else {DEFAULT_MAX_MEGAPIXELS:g}: sized for a Pi's memory)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for spec in COMMANDS:
        module_name, func_name = spec.split(":")
        getattr(importlib.import_module(module_name), func_name)(subparsers)
    return parser


def setup_logging(level: str) -> None:
    """Log to stderr with UTC-free local timestamps (journald adds its own)."""
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-agent`` console script; returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list:
        args_list = ["run"]  # `edge-agent` alone runs the main job on the default config
    parser = build_parser()
    args = parser.parse_args(args_list)
    setup_logging(args.log_level)
    from_environment = os.environ.get(MAX_MEGAPIXELS_ENV)
    if args.max_megapixels is None and from_environment:
        try:
            args.max_megapixels = number(float, gt=0)(from_environment)
        except argparse.ArgumentTypeError as exc:
            print(f"edge-agent: error: ${MAX_MEGAPIXELS_ENV}: {exc}", file=sys.stderr)
            return 2
    set_max_pixels(args.max_megapixels)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except UserError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
