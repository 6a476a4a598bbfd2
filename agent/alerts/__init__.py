"""Print-failure alerts: a score per frame, smoothed, with warn and act levels (Obico's method).

- ``score``: the per-frame failure score from the detections;
- ``scene``: does the camera still see the print (``view_changed``, ``obstructed``);
- ``view``: the view events and their JSON;
- ``monitor``: the state machine that decides when to warn, act and clear;
- ``state``: what the monitor remembers across restarts;
- ``events``: levels, samples, events and their JSON;
- ``stage``: the pipeline stage that feeds the monitor and asks the printer to pause;
- ``build``: the stage from the config (printer check, watcher thread, clock).
"""

from agent.alerts.events import AlertEvent, AlertLevel, Sample, alert_payload
from agent.alerts.monitor import AlertMonitor
from agent.alerts.scene import SceneCheck, SceneVerdict
from agent.alerts.score import failure_score, validate_failure_labels
from agent.alerts.stage import AlertEvents, AlertStage, SteppedClock
from agent.alerts.view import ViewEvent, view_payload

__all__ = [
    "AlertEvent",
    "AlertEvents",
    "AlertLevel",
    "AlertMonitor",
    "AlertStage",
    "Sample",
    "SceneCheck",
    "SceneVerdict",
    "SteppedClock",
    "ViewEvent",
    "alert_payload",
    "failure_score",
    "validate_failure_labels",
    "view_payload",
]
