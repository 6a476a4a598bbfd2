"""``edge-agent review``: run the receiver, close batches on demand, list batches."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from agent.commands.values import number
from agent.config.loading import load_yaml_model
from agent.config.review import ReviewSettings
from agent.errors import ConfigError
from agent.review.batches import CLOSED, Batch
from agent.review.checks import id_problem
from agent.review.store import ReviewStore

log = logging.getLogger(__name__)

_POLL_S = 0.2


def add_review_command(subparsers: Any) -> None:
    """Register ``edge-agent review``."""
    parser = subparsers.add_parser(
        "review",
        help="receive the agents' frames and pre-labels over MQTT into VoTT projects for review",
        description="Subscribe to <prefix>/+/frames/+ and <prefix>/+/annotations/+ and write one VoTT "
        "2.2.0 project per device and batch under the configured root. Runs until SIGINT/SIGTERM. "
        "With --close-batch: close the open batch now so it can be reviewed.",
    )
    parser.add_argument("--config", "-c", help="review YAML config (default: every key at its default)")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    parser.add_argument(
        "--close-batch",
        action="store_true",
        help="close the open batch (of --device, else of every device) and print its project file",
    )
    parser.add_argument("--device", help="with --close-batch or --list: only this device")
    parser.add_argument(
        "--wait-s",
        type=number(float, ge=0),
        help="with --close-batch while a receiver runs: wait this long for it to close the batch "
        "(default close_grace_s + 10)",
    )
    parser.add_argument("--list", action="store_true", help="list the batches and their state, and exit")
    parser.set_defaults(handler=run_review)


def load_settings(path: str | None) -> ReviewSettings:
    """The config file validated (errors name the key and line), or the defaults without a file."""
    if path is None:
        return ReviewSettings()
    return load_yaml_model(path, ReviewSettings, what="review config")


def run_review(args: argparse.Namespace) -> int:
    """The ``review`` handler."""
    settings = load_settings(args.config)
    if args.device is not None and id_problem(args.device, folder=True):
        raise ConfigError(f"--device {args.device!r} {id_problem(args.device, folder=True)}")
    if args.check:
        print(f"{args.config or 'the default review config'}: ok")
        return 0
    if args.list:
        return _list_batches(settings, args.device)
    if args.close_batch:
        return _close_batches(settings, args.device, args.wait_s)
    from agent.commands.interrupts import Interrupts
    from agent.review.service import supervised_receiver

    with supervised_receiver(settings) as receiver, Interrupts(receiver.stop) as interrupts:
        stats = receiver.run()
    print(
        f"received {stats['received']} messages: {stats['frames_written']} frames and "
        f"{stats['annotations_stored']} annotations stored, {stats['duplicates']} duplicates, "
        f"{stats['dropped_total']} dropped; projects under {receiver.store.root}",
        file=sys.stderr,
    )
    if interrupts.signal is not None:
        print(
            f"stopped by {interrupts.signal.name}: everything received is saved; what agents send "
            "meanwhile waits in this receiver's session on the broker until it starts again",
            file=sys.stderr,
        )
    return interrupts.exit_code


def _closed_line(batch: Batch) -> str:
    try:
        info = json.loads((batch.path / CLOSED).read_text(encoding="utf-8"))
        counts = f"{info['frames']} frames, {info['assets']} pre-labelled"
    except (OSError, ValueError, KeyError, TypeError):
        counts = "?"
    return f"{batch.device}/{batch.name}: closed ({counts}); open in VoTT: {batch.project_file}"


def _close_batches(settings: ReviewSettings, device: str | None, wait_s: float | None) -> int:
    store = ReviewStore(settings, owner=f"{settings.mqtt.client_id}-cli")
    try:
        sealed = store.request_close(device)
        if not store.presence.others_or_self_running():
            # Nobody else will close them: do it now.
            results = store.housekeeping(force_close=True, device=device)
            for result in results:
                print(_closed_line(result.batch))
            if not results:
                print("no open or sealed batch to close")
            return 0
        if not sealed:
            print("no open batch to close (sealed ones close when their last parts arrive)")
            return 0
        deadline = time.monotonic() + (settings.close_grace_s + 10.0 if wait_s is None else wait_s)
        waiting = list(sealed)
        while waiting and time.monotonic() < deadline:
            time.sleep(_POLL_S)
            for batch in [b for b in waiting if (b.path / CLOSED).exists()]:
                print(_closed_line(batch))
                waiting.remove(batch)
        for batch in waiting:
            print(
                f"{batch.device}/{batch.name}: sealed; the running receiver closes it once its frames' parts "
                f"have arrived (at most close_grace_s = {settings.close_grace_s:g} s)"
            )
        return 0
    finally:
        store.close()


def _list_batches(settings: ReviewSettings, device: str | None) -> int:
    store = ReviewStore(settings, owner=f"{settings.mqtt.client_id}-cli")
    try:
        devices = [device] if device is not None else store.devices()
        rows = 0
        for dev in devices:
            for batch in store.batches(dev, include_closed=True):
                rows += 1
                if batch.state == "closed":
                    print(_closed_line(batch))
                else:
                    frames, notes = len(batch.frame_ids()), len(batch.annotation_ids())
                    print(
                        f"{batch.device}/{batch.name}: {batch.state} ({frames} frames, {notes} annotations)"
                    )
        if not rows:
            print(f"no batches under {Path(store.root)}")
        return 0
    finally:
        store.close()
