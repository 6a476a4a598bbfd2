"""Print-failure alerts: a score per frame, smoothed, with warn and act levels (Obico's method).

- ``score``: the per-frame failure score from the detections;
- ``monitor``: the state machine that decides when to warn, act and clear;
- ``state``: what the monitor remembers across restarts;
- ``events``: levels, samples, events and their JSON;
- ``stage``: the pipeline stage that feeds the monitor and pauses the printer.
"""

from agent.alerts.events import AlertEvent, AlertLevel, Sample, alert_payload
from agent.alerts.monitor import AlertMonitor
from agent.alerts.score import failure_score, validate_failure_labels
from agent.alerts.stage import AlertEvents, AlertStage, SteppedClock, run_action

__all__ = [
    "AlertEvent",
    "AlertEvents",
    "AlertLevel",
    "AlertMonitor",
    "AlertStage",
    "Sample",
    "SteppedClock",
    "alert_payload",
    "failure_score",
    "run_action",
    "validate_failure_labels",
]
