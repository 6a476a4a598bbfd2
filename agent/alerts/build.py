"""The alert stage from the config: the printer checked at start-up, its watcher thread, the scene
check, and the clock alert times and cooldowns follow.

The clock depends on where the frames come from:

- a camera or a stream: each frame's capture time;
- a watched folder (``source.watch``, ``run --watch``): the wall clock when the frame is handled, i.e.
  the file's arrival (a file's modification time can be anything after a copy);
- a recording (a folder that is not watched, a video file): a simulated clock, one frame every
  ``source.interval_s`` (default ``RECORDED_STEP_S``), since its files carry no trustworthy time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from agent.alerts.monitor import AlertMonitor
from agent.alerts.scene import SceneCheck
from agent.alerts.stage import AlertStage, SteppedClock
from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.flow import EventBus
from agent.printer.check import check_printer
from agent.printer.hosts import make_printer
from agent.printer.watcher import PrinterWatcher
from agent.sources import FrameSource
from agent.sources.folder import FolderSource

log = logging.getLogger(__name__)

RECORDED_STEP_S = 10.0  # simulated seconds between recorded frames (Obico samples every 10 s)
STARTUP_CHECK_S = 10.0  # at most this long for each request of the start-up check of the printer


def alert_clock(config: AgentConfig, source: FrameSource) -> Callable[[], float] | None:
    """The clock of the alert stage for ``source`` (None: each frame's own timestamp)."""
    if source.live:
        return None
    if isinstance(source, FolderSource) and config.source.watch:
        return time.time
    return SteppedClock(time.time(), config.source.interval_s or RECORDED_STEP_S)


def start_printer_watcher(config: AgentConfig, events: EventBus) -> PrinterWatcher | None:
    """Check the printer host, then start polling it (None for ``printer.kind: none``).

    A rejected API key, an unreadable key file or a URL that is not the host's API stops the agent
    here (``ConfigError``); a host that does not answer only gets a warning: it may be switched off,
    and the agent waits for it."""
    printer = config.printer
    if printer.kind == "none":
        if config.alerts.action == "pause":
            log.warning("alerts.action is pause but printer.kind is none: act alerts pause nothing")
        return None
    verdict = check_printer(printer, min(printer.timeout_s, STARTUP_CHECK_S))
    if verdict.config_problem:
        raise ConfigError(f"printer: {verdict.line()}")
    if verdict.level == "OK":
        log.info("printer: %s", verdict.detail)
    else:
        log.warning("printer: %s; the agent starts anyway and asks again every poll", verdict.line())
    watcher = PrinterWatcher(make_printer(printer), printer, on_outcome=events.post)
    watcher.start(STARTUP_CHECK_S)
    return watcher


def build_alert_stage(
    config: AgentConfig, source: FrameSource, events: EventBus, labels: Sequence[str]
) -> AlertStage:
    """The alert stage of a running agent; ``labels`` are the model's. A pause the last run asked
    for and did not see land is asked for again."""
    settings = config.alerts
    if settings.state_file is None:
        settings = settings.model_copy(update={"state_file": config.output.data_dir() / "alert-state.json"})
    watcher = start_printer_watcher(config, events)
    scene = SceneCheck(settings.scene, labels) if settings.scene.enabled else None
    stage = AlertStage(AlertMonitor(settings), watcher, scene=scene, clock=alert_clock(config, source))
    stage.resume_pending_pause()
    return stage
