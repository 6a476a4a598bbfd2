"""The MQTT stage: every frame's detections, each kept frame's picture and annotation, and every
alert and view event, into the outbox (the sender thread takes them to the broker)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from agent.alerts.events import alert_payload
from agent.alerts.stage import AlertEvents
from agent.alerts.view import view_payload
from agent.flow import Outputs, Stage
from agent.frames import FrameResult
from agent.harvest.decision import KeepDecision
from agent.mqtt.publisher import MqttPublisher
from agent.vott.stage import StoredFrame

log = logging.getLogger(__name__)


class MqttStage(Stage):
    """Queues the messages of each result in the outbox (sending happens on the publisher's thread)."""

    name = "mqtt"
    needs = (KeepDecision,)
    uses = (StoredFrame, AlertEvents)

    def __init__(self, publisher: MqttPublisher) -> None:
        self.publisher = publisher

    def handle(self, result: FrameResult, outputs: Outputs) -> None:
        """Publish this result's detections, its picture and annotation when kept, its alerts."""
        alerts = outputs.find(AlertEvents)
        device = self.publisher.topics.device_id
        for event in alerts.events if alerts is not None else ():
            self.publisher.publish_alert(alert_payload(event, device_id=device))
        for view in alerts.views if alerts is not None else ():
            self.publisher.publish_view(view_payload(view, device_id=device))
        stored = outputs.find(StoredFrame)
        self.publisher.publish_result(
            result,
            kept=outputs.get(KeepDecision).keep,
            picture=stored.image if stored is not None else None,
            picture_file=stored.image_path if stored is not None else None,
        )
        return None

    def summary_line(self) -> str:
        """Broker link and outbox size for the periodic log line (the outbox grows while no
        broker answers)."""
        stats = self.publisher.stats()
        outbox = stats.get("outbox", {})
        link = (
            "connected"
            if stats.get("connected")
            else f"not connected ({stats.get('last_error') or 'no broker yet'})"
        )
        return (
            f"mqtt: {link}; outbox {outbox.get('messages', 0)} messages, "
            f"{outbox.get('bytes', 0) / 1e6:.1f} MB, {outbox.get('dropped_total', 0)} dropped; acked {stats.get('acked', 0)}"
        )

    def close(self) -> None:
        """Publish ``stopped`` and wait a bounded time for in-flight messages."""
        self.publisher.close(clean=True)

    def stats(self) -> Mapping[str, Any]:
        """Connection and outbox counters."""
        return self.publisher.stats()
