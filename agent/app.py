"""Assemble a running agent from its configuration: source, detector and output stages.

``build_agent(config)`` opens everything that can fail (model, source, output folders,
printer key, broker credentials) before any thread starts, so a mistake stops the agent at
start-up with a clear message; ``Agent.run()`` then runs the pipeline until the source ends
or ``stop()`` is called.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from agent.alerts import validate_failure_labels
from agent.alerts.build import build_alert_stage
from agent.config import AgentConfig
from agent.config.mqtt import MqttSettings
from agent.config.source import SourceSettings
from agent.detect.detector import Detector, open_detector
from agent.detect.known_answer import check_known_answer
from agent.errors import ConfigError
from agent.flow import EventBus, Stage
from agent.fsutil import GroupSync, remove_stale_temp_files
from agent.gate import ChangeGate
from agent.harvest import Harvester
from agent.harvest.harvester import INDEX_NAME
from agent.harvest.stage import KeepStage, QuotaStage
from agent.mqtt.publisher import create_publisher
from agent.mqtt.stage import MqttStage
from agent.naming import safe_name
from agent.pipeline import HandledFrame, Pipeline
from agent.printer import webcam_urls
from agent.sources import FrameSource, open_source
from agent.sources.decode import DecodeHint
from agent.sources.folder import FolderSource
from agent.sources.resume import ResumeFile, ResumeStage, source_key
from agent.sources.video import VideoFileSource
from agent.vott import VottProject
from agent.vott.stage import VottStage

log = logging.getLogger(__name__)


@dataclass
class Agent:
    """A configured agent, ready to run."""

    config: AgentConfig
    detector: Detector
    source: FrameSource
    pipeline: Pipeline
    stages: list[Stage] = field(default_factory=list)
    closers: list[Any] = field(default_factory=list)

    def run(self) -> dict[str, Any]:
        """Run until the source ends or ``stop()``; returns the final stats."""
        try:
            return self.pipeline.run()
        finally:
            for close in self.closers:
                try:
                    close()
                except Exception:
                    log.exception("shutting down failed")

    def stop(self) -> None:
        """Finish queued frames and stop (safe from a signal handler)."""
        self.pipeline.stop()


def mqtt_settings(config: AgentConfig) -> MqttSettings:
    """The MQTT settings with a relative outbox path placed in the output folder."""
    mqtt = config.mqtt
    outbox = Path(mqtt.outbox.path).expanduser()
    if not outbox.is_absolute():
        outbox = config.output.data_dir() / outbox
        mqtt = mqtt.model_copy(update={"outbox": mqtt.outbox.model_copy(update={"path": str(outbox)})})
    return mqtt


PRINTER_WEBCAM_URLS = ("printer", "printer:snapshot", "printer:stream")


def printer_webcam(config: AgentConfig) -> SourceSettings:
    """The source settings, with ``url: printer`` (or ``printer:snapshot`` / ``printer:stream``)
    replaced by the printer host's webcam URL (OctoPrint, or Moonraker's crowsnest)."""
    url = config.source.url
    if url not in PRINTER_WEBCAM_URLS:
        return config.source
    urls = webcam_urls(config.printer)
    if urls is None:
        raise ConfigError(f"source.url: {url} needs a printer: set printer.kind and printer.url")
    chosen = urls.stream if url == "printer:stream" else urls.snapshot
    return config.source.model_copy(update={"url": chosen, "id": config.source.id or "printer"})


def project_name(config: AgentConfig) -> str:
    """The VoTT project name: ``output.project_name`` or ``edge-agent-<source id>``."""
    return config.output.project_name or safe_name(f"edge-agent-{config.source.source_id}")


def build_agent(
    config: AgentConfig,
    *,
    on_result: Callable[[HandledFrame], None] | None = None,
    from_start: bool = False,
    allow_drift: bool = False,
) -> Agent:
    """Open the detector (and check its known answers: a mismatch stops here unless ``allow_drift``),
    the output folders, the outbox and the source, and wire the stages: alerts -> harvest decision
    -> VoTT writer -> disk quota -> MQTT -> resume point. ``from_start``: process a folder or video
    from its beginning, not after where the last run stopped."""
    # OpenCV's own thread pool would fight the interpreter's threads for the same cores; the
    # resizes and JPEG work here are small and run beside inference anyway (measured: +7 %).
    cv2.setNumThreads(1)
    interpreters, threads = config.detector.parallelism()
    detector_settings = config.detector.model_copy(update={"num_threads": threads})
    detectors = [open_detector(detector_settings) for _ in range(interpreters)]
    detector = detectors[0]
    known = check_known_answer(detector, data_dir=config.output.data_dir(), allow_drift=allow_drift)
    for opened in detectors:
        known.attach(opened)
    if config.alerts.enabled:
        validate_failure_labels(config.alerts, detector.labels)
    out = config.output
    # resume.json, harvest.json, the alert state: temp files of writes a kill cut short (the VoTT
    # project sweeps its own folders)
    state_file = config.alerts.state_file
    remove_stale_temp_files(out.data_dir(), *([state_file.parent] if state_file is not None else []))
    events = EventBus()
    source = open_source(printer_webcam(config))
    publisher = create_publisher(mqtt_settings(config), events=events)
    project = _vott_project(config, detector.labels)
    stages: list[Stage] = []
    if config.alerts.enabled:
        stages.append(build_alert_stage(config, source, events, detector.labels))
    harvester = Harvester(config.harvest, out.frames_dir(), index_path=out.data_dir() / INDEX_NAME)
    gate = ChangeGate(config.gate) if config.gate.enabled else None
    stages += [
        KeepStage(harvester, gate=gate, summary_path=out.data_dir() / "harvest.json"),
        VottStage(project, jpeg_quality=out.jpeg_quality, events=events),
        QuotaStage(harvester, events),
    ]
    if publisher is not None:
        stages.append(MqttStage(publisher))
    resume = _resume_stage(config, source, from_start)
    if resume is not None:
        stages.append(resume)
    if config.source.reduced_decode:
        source.decode_hint = DecodeHint(
            detector.input_width, detector.input_height, either=detector.preprocess.letterbox
        )
    pipeline = Pipeline(
        source,
        detectors,
        stages,
        config.pipeline,
        live=source.live,
        gate=gate,
        on_result=on_result,
        on_stats=publisher.publish_stats if publisher is not None else None,
        detector_factory=lambda: known.attach(open_detector(detector_settings)),
        events=events,
    )
    log.info(
        "%s on %s (%s, %dx%d input, %d interpreter%s x %d thread%s) -> %s",
        source.description,
        detector.display_name,
        detector.runtime,
        detector.input_width,
        detector.input_height,
        interpreters,
        "s" if interpreters > 1 else "",
        threads,
        "s" if threads > 1 else "",
        out.data_dir(),
    )
    return Agent(config=config, detector=detector, source=source, pipeline=pipeline, stages=stages)


def _vott_project(config: AgentConfig, labels: Sequence[str]) -> VottProject:
    out = config.output
    group_sync = (
        GroupSync(out.data_dir(), out.fsync_interval_s) if out.fsync and out.fsync_interval_s else None
    )
    return VottProject(
        out.vott_dir(),
        out.frames_dir(),
        name=project_name(config),
        local_root=out.data_dir(),
        reviewer_root=out.reviewer_root,
        tags=[label for label in labels if label and label != "???"],
        flush_every=out.save_every,
        min_save_interval_s=out.save_interval_s,
        max_unsaved_s=out.max_unsaved_s,
        fsync=out.fsync,
        group_sync=group_sync,
        link_frames=out.link_source_frames,
    )


def _resume_stage(config: AgentConfig, source: FrameSource, from_start: bool) -> ResumeStage | None:
    """For a folder or video that is not looped: skip what the last run finished, and record
    each frame finished from now on."""
    if not isinstance(source, FolderSource | VideoFileSource) or config.source.loop:
        return None
    resume_file = ResumeFile(config.output.data_dir() / "resume.json")
    key = source_key(source.source_id, config.source.url)
    if from_start:
        resume_file.forget(key)
    else:
        source.resume_after = resume_file.point(key)
    return ResumeStage(resume_file, key)
