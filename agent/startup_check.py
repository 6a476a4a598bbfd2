"""``edge-agent run --check``: open everything ``run`` opens at start-up, and run no frame.

Each check takes the ``StartupContext`` and returns one line saying what it opened, or raises
``UserError`` naming the key to fix (``ConfigError``: exit 2; anything the machine must fix: exit 1).
The checks run in ``STARTUP_CHECKS`` order and stop at the first mistake, as ``run`` would:

1. secrets: ``mqtt.password_file`` / ``password_env`` (when MQTT is on), ``source.password_*`` and
   ``source.api_key_*``, ``printer.api_key_file`` / ``api_key_env`` (when a printer is set);
2. TLS files: ``mqtt.ca_file``, ``cert_file`` and ``key_file`` load into a TLS context;
3. output folders: ``output.dir``, its frames and VoTT folders, the outbox's and the alert state's
   folders can be written (a probe file is written and removed; nothing is created);
4. the model: built as ``run`` builds it (labels, Edge TPU or its fallback, one warm-up inference);
5. its known answers: the model's detections on a known frame are the expected ones (nothing is
   recorded; drift stops here unless ``--allow-drift``);
6. the alerts' failure labels are among the model's labels;
7. the printer host (``printer.kind``) answers and accepts the API key;
8. the source opens (a camera or URL answers, a folder exists and holds images) and is closed.

``run`` itself runs the first three (``BEFORE_RUN``) before it builds the agent, so a read-only
folder or a missing password file is one clear line there too, not a traceback halfway through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import AgentConfig
from agent.errors import UserError

if TYPE_CHECKING:
    from agent.detect.detector import Detector

FOLDER_FIX = (
    "set {key} to a folder the agent's user can write (for the systemd unit, ReadWritePaths must include it)"
)


@dataclass
class StartupContext:
    """The config being checked, and what the checks opened for the ones after them."""

    config: AgentConfig
    allow_drift: bool = False  # run --allow-drift: a known-answer mismatch is a warning
    detector: Detector | None = None  # set by model_opens: later checks may run it on a known image
    opened: list[str] = field(default_factory=list)  # one line per check that passed


StartupCheck = Callable[[StartupContext], str]


def secrets_readable(context: StartupContext) -> str:
    """Every password and API key the config points at can be read (values are never shown)."""
    from agent.sources.credentials import Credentials

    config = context.config
    read = []
    if config.mqtt.enabled and config.mqtt.read_password() is not None:
        read.append("mqtt password")
    credentials = Credentials.from_settings(config.source)
    if credentials.password:
        read.append("source password")
    if credentials.api_key:
        read.append("source API key")
    if config.printer.kind != "none":
        from agent.printer import resolve_api_key

        if resolve_api_key(config.printer):
            read.append("printer API key")
    return f"secrets: {', '.join(read)} readable" if read else "secrets: none configured"


def tls_files_load(context: StartupContext) -> str:
    """With MQTT over TLS: the CA, client certificate and key load as the publisher loads them."""
    mqtt = context.config.mqtt
    if not (mqtt.enabled and mqtt.use_tls):
        return "TLS files: none used"
    from agent.mqtt.connection import build_tls_context

    build_tls_context(mqtt)
    files = [f"mqtt.{key}" for key in ("ca_file", "cert_file", "key_file") if getattr(mqtt, key)]
    return f"TLS files: {', '.join(files)} load" if files else "TLS files: the system's CA certificates load"


def _folders(config: AgentConfig) -> list[tuple[str, Path]]:
    """``(config key, folder)`` of every folder ``run`` writes in."""
    from agent.app import mqtt_settings

    out = config.output
    folders = [
        ("output.dir", out.data_dir()),
        ("output.dir", out.frames_dir()),
        ("output.dir", out.vott_dir()),
    ]
    if config.mqtt.enabled:
        folders.append(("mqtt.outbox.path", Path(mqtt_settings(config).outbox.path).expanduser().parent))
    if config.alerts.enabled and config.alerts.state_file is not None:
        folders.append(("alerts.state_file", Path(config.alerts.state_file).expanduser().parent))
    return folders


def output_folders_writable(context: StartupContext) -> str:
    """The folders ``run`` writes in can be written (or created where they do not exist yet)."""
    from agent.doctor.disk import probe_writable

    for key, folder in _folders(context.config):
        ok, detail = probe_writable(folder)
        if not ok:
            raise UserError(f"{key}: {detail}; " + FOLDER_FIX.format(key=key))
    return f"output folders: {context.config.output.data_dir()} writable"


def model_opens(context: StartupContext) -> str:
    """The model opens as ``run`` opens it: labels, runtime, Edge TPU (or its fallback), warm-up."""
    from agent.detect.detector import open_detector

    config = context.config
    _, threads = config.detector.parallelism()
    detector = open_detector(config.detector.model_copy(update={"num_threads": threads}))
    context.detector = detector
    labels = f"{len(detector.labels)} labels" if detector.labels else "no labels"
    return f"model: {detector.name} loads on {detector.runtime} with {labels}, warmed up"


def known_answers_hold(context: StartupContext) -> str:
    """The model gives its known answers on a known frame, as ``run`` checks it (never records)."""
    from agent.detect.known_answer import drift_error, known_answer

    assert context.detector is not None
    result = known_answer(context.detector, data_dir=context.config.output.data_dir(), record=False)
    if result.status == "drift" and not context.allow_drift:
        raise drift_error(result)
    return f"known answer: {result.detail}"


def alert_labels_present(context: StartupContext) -> str:
    """With alerts on: at least one of ``alerts.failure_labels`` is a label of the model."""
    settings = context.config.alerts
    if not settings.enabled or context.detector is None:
        return "alerts: off"
    from agent.alerts import validate_failure_labels

    validate_failure_labels(settings, context.detector.labels)
    found = sorted(set(settings.failure_labels) & set(context.detector.labels))
    return f"alerts: the model has the failure labels {', '.join(found)}"


def printer_answers(context: StartupContext) -> str:
    """The printer host answers with the configured API key (a config problem: ``ConfigError``)."""
    from agent.errors import ConfigError
    from agent.printer.check import check_printer

    settings = context.config.printer
    verdict = check_printer(settings, settings.timeout_s)
    if verdict.level == "FAIL":
        raise (ConfigError if verdict.config_problem else UserError)(f"printer: {verdict.line()}")
    return f"printer: {verdict.line()}"


def source_opens(context: StartupContext) -> str:
    """The source opens (``source.url: printer`` resolved) and is closed again; no frame is read."""
    from agent.app import printer_webcam
    from agent.sources import open_source

    source = open_source(printer_webcam(context.config))
    try:
        return f"source: {source.description} opens"
    finally:
        source.close()


# What `run` opens before any thread starts, in order; the printer before the source, whose URL
# may be the printer's webcam.
STARTUP_CHECKS: list[StartupCheck] = [
    secrets_readable,
    tls_files_load,
    output_folders_writable,
    model_opens,
    known_answers_hold,
    alert_labels_present,
    printer_answers,
    source_opens,
]

# The cheap ones `run` runs itself before building the agent (the others happen as it builds it).
BEFORE_RUN: list[StartupCheck] = [secrets_readable, tls_files_load, output_folders_writable]


def run_startup_checks(
    config: AgentConfig, checks: Sequence[StartupCheck] = STARTUP_CHECKS, *, allow_drift: bool = False
) -> list[str]:
    """Run ``checks`` in order; returns their lines, or raises the first ``UserError``."""
    context = StartupContext(config, allow_drift=allow_drift)
    for check in checks:
        context.opened.append(check(context))
    return context.opened
