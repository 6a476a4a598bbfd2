"""Whether ``run`` keeps printer alerts on for the model it was given.

The bundled default config watches for the demo model's failure labels (spaghetti, adhesion).
Someone trying their own model with it (``run --model yolov8n.tflite --source photos/``) did not
ask for alerts, so when the model has none of those labels the alerts turn off with one log line
instead of stopping the run. A config of the user's own that turns alerts on with labels the model
lacks is still refused (exit 2): that is a mistake to fix. ``--no-alerts`` turns them off always.
"""

from __future__ import annotations

import logging

from agent.config import AgentConfig
from agent.detect.model import resolve_model
from agent.detect.model_store import configured_model

log = logging.getLogger(__name__)


def alerts_for_model(config: AgentConfig, *, from_default_config: bool, no_alerts: bool) -> AgentConfig:
    """``config`` with alerts off when ``no_alerts``, or when they came from the bundled default
    config and the model has none of the failure labels; else ``config`` unchanged."""
    if not config.alerts.enabled:
        return config
    off = config.model_copy(update={"alerts": config.alerts.model_copy(update={"enabled": False})})
    if no_alerts:
        log.info("alerts off (--no-alerts)")
        return off
    if not from_default_config:
        return config
    detector = config.detector
    model = configured_model(detector)
    labels = resolve_model(model, detector.labels).labels or []
    wanted = sorted(config.alerts.failure_labels)
    if set(wanted) & set(labels):
        return config
    log.info(
        "alerts off: %s has none of the failure labels (%s) the bundled default config alerts on; "
        "to alert with this model, set alerts.failure_labels to its labels in a config of your own",
        model,
        ", ".join(wanted),
    )
    return off
